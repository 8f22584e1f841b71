"""Tests of the stage-1 motion transformer (model/nets/motion_dit.py): shapes, the alignment mask,
any window length, overfitting one batch, deterministic init, the paper preset's size."""

from __future__ import annotations

import pytest
import torch

from fd2talk.model.nets.motion_dit import (
    PRESETS,
    CrossAttention,
    MotionDiT,
    MotionDiTConfig,
    alignment_mask,
)

AUDIO_DIM = 80  # log-mel features


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(preset: str, motion_dim: int, audio_dim: int = AUDIO_DIM, seed: int = 0, **over):
    """A model whose zero-initialised output layer is randomised, so outputs depend on inputs."""
    torch.manual_seed(seed)
    config = PRESETS[preset]
    if over:
        config = MotionDiTConfig(**{**config.__dict__, **over})
    model = MotionDiT(config, motion_dim, audio_dim)
    torch.nn.init.normal_(model.out_proj.weight, std=0.1)
    return model.eval()


def _inputs(n: int, frames: int, motion_dim: int, audio_dim: int = AUDIO_DIM, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n, frames, motion_dim, generator=g)  # (N, F, D)
    t = torch.randint(0, 1000, (n,), generator=g)  # (N,)
    audio = torch.randn(n, frames, audio_dim, generator=g)  # (N, F, D_a)
    return x_t, t, audio


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("motion_dim", [52, 64, 6])
def test_shapes(preset, motion_dim):
    model = _model(preset, motion_dim)
    x_t, t, audio = _inputs(3, 25, motion_dim)
    with torch.no_grad():
        out = model(x_t, t, audio)
    assert out.shape == (3, 25, motion_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_fresh_model_predicts_zero():
    """The output layer is zero-initialised: x0_hat starts at the (normalised) data mean."""
    torch.manual_seed(0)
    model = MotionDiT(PRESETS["tiny"], 6, 16)
    with torch.no_grad():
        out = model(*_inputs(2, 25, 6, 16))
    assert torch.equal(out, torch.zeros_like(out))


def test_paper_preset_size():
    model = MotionDiT(PRESETS["paper"], 52, AUDIO_DIM)
    params = sum(p.numel() for p in model.parameters())
    print(f"paper MotionDiT (motion 52, audio {AUDIO_DIM}): {params:,} parameters")
    assert 6_000_000 < params < 7_500_000  # 6 blocks x ~1.05 M + embeddings
    assert len(model.blocks) == 6 and PRESETS["paper"].k == 3


def test_alignment_mask():
    mask = alignment_mask(8, 3)
    assert mask.shape == (8, 8) and mask.dtype == torch.bool
    for i in range(8):
        for j in range(8):
            assert bool(mask[i, j]) == (abs(i - j) <= 3)
    assert alignment_mask(8, 0).equal(torch.eye(8, dtype=torch.bool))
    assert alignment_mask(8, None) is None


@pytest.mark.parametrize("k", [3, 1, None])
def test_cross_attention_mask_locality(k):
    """Changing ctx at frame j changes the output exactly at the frames i with |i - j| <= k."""
    frames = 12
    torch.manual_seed(0)
    cross = CrossAttention(width=32, ctx_dim=16, heads=4).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, frames, 32, generator=g)  # (N, F, W)
    ctx = torch.randn(2, frames, 16, generator=g)  # (N, F, D_ctx)
    mask = alignment_mask(frames, k)
    with torch.no_grad():
        base = cross(x, ctx, mask)  # (N, F, W)
        for j in (0, 5, frames - 1):
            changed_ctx = ctx.clone()
            changed_ctx[:, j] += torch.randn(2, 16, generator=g)
            diff = (cross(x, changed_ctx, mask) - base).abs().amax(dim=(0, 2))  # (F,)
            for i in range(frames):
                inside = k is None or abs(i - j) <= k
                if inside:
                    assert diff[i] > 1e-4, (k, j, i)
                else:
                    assert diff[i] == 0.0, (k, j, i)


def test_model_uses_the_mask():
    """In a one-block model whose self-attention is removed, audio at frame j only reaches
    the output at frames within j +- k (the mask is wired into every block)."""
    model = _model("tiny", 6, 16, layers=1, k=2)
    block = model.blocks[0]
    torch.nn.init.zeros_(block.attn.out.weight)  # self-attention contributes its bias only
    x_t, t, audio = _inputs(2, 10, 6, 16)
    with torch.no_grad():
        base = model(x_t, t, audio)
        audio2 = audio.clone()
        audio2[:, 4] += 1.0
        diff = (model(x_t, t, audio2) - base).abs().amax(dim=(0, 2))  # (F,)
    assert (diff[2:7] > 1e-5).all()
    assert (diff[:2] == 0).all() and (diff[7:] == 0).all()


@pytest.mark.parametrize("frames", [1, 2, 7, 25, 40])
def test_any_window_length(frames):
    model = _model("tiny", 52)
    x_t, t, audio = _inputs(2, frames, 52)
    with torch.no_grad():
        out = model(x_t, t, audio)
    assert out.shape == (2, frames, 52) and torch.isfinite(out).all()


def test_condition_inputs_matter():
    model = _model("tiny", 6, time_in_tokens=False)
    x_t, t, audio = _inputs(2, 25, 6)
    with torch.no_grad():
        base = model(x_t, t, audio)
        assert not torch.allclose(model(x_t, (t + 300) % 1000, audio), base)
        assert not torch.allclose(model(x_t, t, audio + 1.0), base)
        assert not torch.allclose(model(x_t + 1.0, t, audio), base)


def test_mismatched_audio_is_an_error():
    model = _model("tiny", 6)
    x_t, t, audio = _inputs(2, 25, 6)
    with pytest.raises(ValueError, match="does not match"):
        model(x_t, t, audio[:, :24])
    with pytest.raises(ValueError, match="divisible"):
        MotionDiT(MotionDiTConfig(width=30, heads=4), 6, 16)


def test_deterministic_init_and_forward():
    a, b, c = _model("tiny", 52, seed=5), _model("tiny", 52, seed=5), _model("tiny", 52, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)
    assert not all(torch.equal(sa[key], sc[key]) for key in sa)
    inputs = _inputs(2, 25, 52)
    with torch.no_grad():
        assert torch.equal(a(*inputs), b(*inputs))


def test_overfits_one_batch():
    """x0 prediction from fixed noisy inputs: 100 Adam steps cut the loss > 100x (seen: ~5e4x)."""
    torch.manual_seed(0)
    model = MotionDiT(PRESETS["tiny"], 8, 16)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 25, 8, generator=g)  # (N, F, D)
    noise = torch.randn(4, 25, 8, generator=g)
    t = torch.tensor([10, 200, 500, 900])
    x_t = 0.8 * x0 + 0.6 * noise  # a fixed noisy input (the scale does not matter here)
    audio = torch.randn(4, 25, 16, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = (model(x_t, t, audio) - x0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1])
