"""Device choice and the one autocast: training's policy (bf16 on CUDA only) and generation's
--dtype (bf16 on either device, fp16 on CUDA only)."""

import pytest
import torch

from fd2talk.core.device import autocast, resolve_device
from fd2talk.core.errors import UserError


def _matmul_dtype() -> torch.dtype:
    return torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype


def test_auto_is_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda:1") == "cuda:1"


def test_training_stays_float32_on_the_cpu():
    with autocast("cpu", "bf16", cuda_only=True):
        assert _matmul_dtype() == torch.float32


def test_generation_dtypes():
    with autocast("cpu", "fp32"):
        assert _matmul_dtype() == torch.float32
    with autocast("cpu", "bf16"):
        assert _matmul_dtype() == torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        autocast("cpu", "fp16")
    with pytest.raises(UserError, match="fp32, bf16 or fp16"):
        autocast("cpu", "int8")
    with pytest.raises(UserError, match="fp32, bf16 or fp16"):
        autocast("cuda", "int8", cuda_only=True)
