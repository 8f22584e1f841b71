"""The EMA of a network's weights and its warm-up."""

import torch

from fd2talk.model.training.ema import EMA


def test_ema_follows_the_model_with_warmup():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.model.parameters())
    before = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=0)  # warm-up: d = min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.model.weight, 0.1 * before + 0.9 * model.weight.detach())
    ema.update(model, step=10_000)  # d = 0.9
    w = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=10_001)
    torch.testing.assert_close(ema.model.weight, 0.9 * w + 0.1 * model.weight.detach())
