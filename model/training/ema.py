"""The exponential moving average of a network's weights that stage 1 and stage 2 sample with
(DESIGN.md section 3; DiT's `update_ema`), with the usual warm-up

    decay_t = min(decay, (1 + t) / (10 + t))

so that a short run is not dominated by the initial weights.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    """Shadow copy of a model whose weights follow `p_ema <- d p_ema + (1 - d) p`."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for p_ema, p in zip(self.model.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
