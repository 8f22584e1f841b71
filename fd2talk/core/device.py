"""Device choice (DESIGN.md section 5): CUDA when present, else CPU; `--device` overrides."""

from __future__ import annotations

from enum import StrEnum

DEVICES = ("auto", "cpu", "cuda")


class DeviceName(StrEnum):
    """The `--device` choices of every command."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def resolve_device(device: str = "auto") -> str:
    """`auto` -> "cuda" when a CUDA device is present, else "cpu"; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
