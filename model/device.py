"""Device choice (DESIGN.md section 5): CUDA when present, else CPU; `--device` overrides."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """`auto` -> "cuda" when a CUDA device is present, else "cpu"; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
