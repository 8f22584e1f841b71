"""Device and precision choice (DESIGN.md section 5): CUDA when present, else CPU; `--device`
overrides. `autocast` is the one mixed-precision context, for training (bf16 on CUDA, float32
on the CPU) and for generation's `--dtype`."""

from __future__ import annotations

from enum import StrEnum

from fd2talk.core.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("fp32", "bf16", "fp16")


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


def autocast(device: str, dtype: str, cuda_only: bool = False):
    """A torch.autocast context on `device` for `dtype` "bf16" or "fp16" (fp32: a null context).

    Generation's --dtype: autocast on the device's own type; fp16 needs CUDA. Training's
    policy is `autocast(device, "bf16", cuda_only=True)`: bf16 on CUDA, nothing on the CPU
    (CPU training stays float32). Another dtype, or fp16 on the CPU, is a UserError."""
    import contextlib

    import torch

    cuda = str(device).startswith("cuda")
    if dtype == "fp32" or (cuda_only and not cuda):
        return contextlib.nullcontext()
    if dtype not in DTYPES:
        raise UserError(f"dtype must be fp32, bf16 or fp16, not {dtype!r}")
    if dtype == "fp16" and not cuda:
        raise UserError("--dtype fp16 needs a CUDA device: use fp32 or bf16 on the CPU")
    return torch.autocast(
        "cuda" if cuda else "cpu", dtype=torch.bfloat16 if dtype == "bf16" else torch.float16
    )
