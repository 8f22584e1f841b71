"""Tests of the stage-2 frame UNet (model/nets/frame_unet.py): shapes at any divisible latent size,
both conditions reach the output, φ1/φ2 structure vs the concat ablation, deterministic init,
overfitting one batch with Diffusion.loss, the paper preset's size and one 64x64 forward."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fd2talk.model.diffusion import Diffusion, DiffusionConfig
from fd2talk.model.nets.frame_unet import (
    PRESETS,
    DualCrossAttention,
    FrameUNet,
    FrameUNetConfig,
    sinusoid_2d,
)

MOTION_DIM = 58  # 52 blendshapes + 6 pose

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(preset: str = "tiny", **over) -> FrameUNetConfig:
    return dataclasses.replace(PRESETS[preset], **over)


def _model(config: FrameUNetConfig, seed: int = 0, motion_dim: int = MOTION_DIM) -> FrameUNet:
    """A model whose zero-initialised output layers are randomised, so every path is live."""
    torch.manual_seed(seed)
    model = FrameUNet(config, motion_dim)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "to_out" in name or "conv_out" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _inputs(n: int, h: int, w: int, d: int = 3, seed: int = 1, motion_dim: int = MOTION_DIM):
    g = torch.Generator().manual_seed(seed)
    j_t = torch.randn(n, d, h, w, generator=g)  # (N, d, h, w)
    t = torch.randint(0, 1000, (n,), generator=g)  # (N,)
    motion = torch.randn(n, motion_dim, generator=g)  # (N, D_m)
    ref = torch.randn(n, d, h, w, generator=g)  # (N, d, h, w)
    return j_t, t, motion, ref


def _attentions(model: FrameUNet) -> list[DualCrossAttention]:
    return [m for m in model.modules() if isinstance(m, DualCrossAttention)]


@pytest.mark.parametrize("cond", ["dual", "concat"])
@pytest.mark.parametrize("size", [(16, 16), (32, 32), (8, 24)])
def test_shapes_any_divisible_size(cond, size):
    model = _model(_config(cond=cond))
    with torch.no_grad():
        out = model(*_inputs(2, *size))
    assert out.shape == (2, 3, *size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_deeper_unet_sizes_and_divisibility():
    """Four levels (factor 8, like the paper preset) at small widths: 8x8, 16x24, 40x8 work;
    a size not divisible by 8 is refused with a message."""
    config = _config(channels=(16, 32, 32, 64), cond_dim=16, motion_tokens=3, norm_groups=8)
    assert config.factor == 8
    model = _model(config)
    with torch.no_grad():
        for h, w in [(8, 8), (16, 24), (40, 8)]:
            assert model(*_inputs(1, h, w)).shape == (1, 3, h, w)
        with pytest.raises(ValueError, match="not divisible"):
            model(*_inputs(1, 12, 16))


def test_fresh_model_predicts_zero():
    """conv_out and every attention output are zero-initialised: J0_hat starts at 0."""
    torch.manual_seed(0)
    model = FrameUNet(PRESETS["tiny"], MOTION_DIM)
    with torch.no_grad():
        out = model(*_inputs(2, 16, 16))
    assert torch.equal(out, torch.zeros_like(out))
    for block in _attentions(model):
        for attn in (block.phi1, block.phi2):
            assert not attn.to_out[0].weight.any() and not attn.to_out[0].bias.any()


@pytest.mark.parametrize("cond", ["dual", "concat"])
def test_motion_and_reference_change_the_output(cond):
    model = _model(_config(cond=cond))
    j_t, t, motion, ref = _inputs(2, 16, 16)
    with torch.no_grad():
        base = model(j_t, t, motion, ref)
        other_motion = model(j_t, t, motion + torch.randn_like(motion), ref)
        other_ref = model(j_t, t, motion, ref.flip(-1))
        again = model(j_t, t, motion, ref)
    assert torch.equal(base, again)
    for out in (other_motion, other_ref):
        assert (out - base).abs().mean() > 1e-3 * base.abs().mean()
    # each sample sees only its own condition: changing sample 1's motion leaves sample 0 alone
    motion2 = motion.clone()
    motion2[1] += 1.0
    with torch.no_grad():
        out = model(j_t, t, motion2, ref)
    torch.testing.assert_close(out[0], base[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[1], base[1])


def test_phi1_phi2_are_distinct_and_concat_has_one_attention_per_block():
    config = _config()
    torch.manual_seed(0)
    dual = FrameUNet(config, MOTION_DIM)
    torch.manual_seed(0)
    concat = FrameUNet(dataclasses.replace(config, cond="concat"), MOTION_DIM)
    levels, layers = len(config.channels), config.layers_per_block
    blocks = levels * layers + levels * (layers + 1) + 1  # encoder, decoder, middle
    assert len(_attentions(dual)) == len(_attentions(concat)) == blocks

    from diffusers.models.attention_processor import Attention

    for block in _attentions(dual):
        attns = [m for m in block.modules() if isinstance(m, Attention)]
        assert len(attns) == 2 and block.phi1 is not block.phi2
        assert block.phi1.to_k.weight.data_ptr() != block.phi2.to_k.weight.data_ptr()
    for block in _attentions(concat):
        assert len([m for m in block.modules() if isinstance(m, Attention)]) == 1
        assert not hasattr(block, "phi1") and not hasattr(block, "phi2")
    n_attn = sum(isinstance(m, Attention) for m in dual.modules())
    assert n_attn == 2 * sum(isinstance(m, Attention) for m in concat.modules())


def test_attention_levels_select_blocks():
    config = _config(
        channels=(16, 32, 32),
        cond_dim=16,
        norm_groups=8,
        attention_levels=(2,),
        mid_attention=False,
    )
    model = _model(config)
    assert len(_attentions(model)) == 1 * 1 + 1 * 2  # level 2: one encoder, two decoder blocks
    with torch.no_grad():
        assert model(*_inputs(1, 16, 16)).shape == (1, 3, 16, 16)


def test_deterministic_init():
    a = FrameUNet(PRESETS["tiny"], MOTION_DIM)  # noqa: F841  (advances the global RNG)
    torch.manual_seed(5)
    b = FrameUNet(PRESETS["tiny"], MOTION_DIM).state_dict()
    torch.manual_seed(5)
    c = FrameUNet(PRESETS["tiny"], MOTION_DIM).state_dict()
    torch.manual_seed(6)
    d = FrameUNet(PRESETS["tiny"], MOTION_DIM).state_dict()
    assert b.keys() == c.keys()
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert any(not torch.equal(b[k], d[k]) for k in b if b[k].is_floating_point())


def test_shared_reference_batch_of_one():
    """A window's frames share one reference: ref (1, d, h, w) equals it repeated N times."""
    model = _model(_config())
    j_t, t, motion, ref = _inputs(3, 16, 16)
    with torch.no_grad():
        shared = model(j_t, t, motion, ref[:1])
        repeated = model(j_t, t, motion, ref[:1].expand(3, -1, -1, -1))
    torch.testing.assert_close(shared, repeated)
    with pytest.raises(ValueError, match="ref"):
        model(j_t, t, motion, ref[:2])
    with pytest.raises(ValueError, match="motion"):
        model(j_t, t, motion[:, :10], ref)


def test_ref_pool_averages_the_reference():
    """ref_pool=2 sees only 2x2 means of x; the paper's full-resolution sequence sees more."""
    j_t, t, motion, ref = _inputs(1, 16, 16)
    bump = torch.zeros_like(ref)
    bump[..., 4, 4], bump[..., 4, 5] = 1.0, -1.0  # zero mean over one 2x2 cell
    for pool, changes in [(1, True), (2, False)]:
        model = _model(_config(ref_pool=pool))
        with torch.no_grad():
            a, b = model(j_t, t, motion, ref), model(j_t, t, motion, ref + bump)
        assert (not torch.allclose(a, b, atol=1e-6)) == changes, pool


def test_sinusoid_2d():
    pos = sinusoid_2d(3, 5, 8)  # (15, 8)
    assert pos.shape == (15, 8)
    # row-major: token k is (y, x) = divmod(k, 5); first half encodes y, second half x
    assert torch.equal(pos[7, :4], pos[5, :4]) and torch.equal(pos[7, 4:], pos[2, 4:])
    torch.testing.assert_close(pos[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    assert len({tuple(p.tolist()) for p in pos}) == 15  # every position is distinct


def test_overfits_one_batch_with_diffusion_loss():
    """Diffusion.loss (fixed t and noise) + Adam: 100 steps cut the loss > 10x."""
    torch.manual_seed(0)
    model = FrameUNet(PRESETS["tiny"], MOTION_DIM)
    diffusion = Diffusion(DiffusionConfig())
    g = torch.Generator().manual_seed(3)
    j0 = torch.randn(4, 3, 8, 8, generator=g)  # (N, d, h, w)
    ref = torch.randn(4, 3, 8, 8, generator=g)
    motion = torch.randn(4, MOTION_DIM, generator=g)
    noise = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([10, 200, 500, 900])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = diffusion.loss(model.predictor(motion, ref), j0, t=t, noise=noise)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.6f}")
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_samples_with_diffusion():
    model = _model(_config())
    _, _, motion, ref = _inputs(2, 16, 16)
    g = torch.Generator().manual_seed(0)
    out = Diffusion(DiffusionConfig()).sample(
        model.predictor(motion, ref), (2, 3, 16, 16), steps=3, generator=g
    )
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_config_validation_and_json_round_trip():
    config = _config(attention_levels=(0,))
    back = FrameUNetConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config))))
    assert back == config and isinstance(back.channels, tuple)
    with pytest.raises(ValueError, match="cond"):
        _config(cond="sum")
    with pytest.raises(ValueError, match="divisible"):
        _config(channels=(30, 64))
    with pytest.raises(ValueError, match="attention_levels"):
        _config(attention_levels=(5,))


def test_paper_preset_size_and_forward():
    """The paper preset: ~82 M parameters; one forward of one 64x64 latent (a few seconds)."""
    config = PRESETS["paper"]
    assert config.channels == (128, 256, 256, 512) and config.cond == "dual"
    assert config.attention_levels is None and config.factor == 8  # attention at every level
    model = _model(config)
    params = sum(p.numel() for p in model.parameters())
    print(f"paper FrameUNet (motion {MOTION_DIM}): {params:,} parameters")
    assert 70_000_000 < params < 95_000_000
    with torch.no_grad():
        out = model(*_inputs(1, 64, 64))
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all() and out.std() > 0
