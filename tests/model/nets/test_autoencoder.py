"""Tests of the stage-2 reference autoencoder (model/nets/autoencoder.py): shapes and f = 4, the
widened decoder conv_in reproducing the original VQModel at step 0, loading a diffusers VQModel
folder saved by the test, save/load and the fingerprint, the commit loss, gradients and a short
fine-tuning run, and the errors users see."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from fd2talk.core.errors import UserError
from fd2talk.model.nets.autoencoder import (
    CONFIG_FILE,
    LATENT_SCALE,
    PRESETS,
    WEIGHTS_FILE,
    AutoencoderConfig,
    RefAutoencoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64  # test images are SIZE x SIZE (any multiple of f works; 256 in the paper)


def _images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1  # (N, 3, H, W) in [-1, 1]


def _smooth_images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Low-frequency images (8x8 noise upsampled): learnable through an f=4, d=3 bottleneck."""
    coarse = _images(n, seed, 8)  # (N, 3, 8, 8)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def _vq(config: AutoencoderConfig, seed: int = 0):
    """A diffusers VQModel with perturbed weights (so every layer, the codebook included,
    matters), as a pretrained one would be."""
    from diffusers import VQModel

    torch.manual_seed(seed)
    vq = VQModel(**config.vq_kwargs())
    with torch.no_grad():
        for p in vq.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return vq.eval()


def _randomise_ref_half(ae: RefAutoencoder) -> None:
    """Give the (zero-initialised) reference half of the decoder's conv_in some weight."""
    with torch.no_grad():
        ae.vq.decoder.conv_in.weight[:, : ae.latent_channels].normal_(std=0.1)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_shapes_and_factor(preset):
    torch.manual_seed(0)
    ae = RefAutoencoder.build(PRESETS[preset]).eval()
    assert ae.factor == 4 and ae.latent_channels == 3
    assert ae.vq.decoder.conv_in.in_channels == 2 * 3
    img, ref = _images(2, 1, 32), _images(2, 2, 32)
    with torch.no_grad():
        z = ae.encode(img)
        out = ae.decode(ae.encode(ref), z)
        rec = ae(ref, img)
    assert z.shape == (2, 3, 8, 8)
    assert out.shape == rec.shape == (2, 3, 32, 32)
    assert torch.isfinite(out).all()
    assert torch.equal(out, rec)  # forward == decode(E(ref), E(img))


def test_paper_preset_is_ldm_vq_f4():
    c = PRESETS["paper"]
    assert (
        c.block_out_channels,
        c.layers_per_block,
        c.latent_channels,
        c.num_vq_embeddings,
        c.factor,
    ) == ((128, 256, 512), 2, 3, 8192, 4)
    assert LATENT_SCALE == 1.0


def test_step0_decode_equals_original_vqmodel():
    """conv_in's reference half is zero and its target half the original weights: before
    fine-tuning, decode(ref, z) is exactly VQModel.decode(z), whatever the reference."""
    config = PRESETS["tiny"]
    vq = _vq(config)
    original = copy.deepcopy(vq)
    ae = RefAutoencoder(config, vq).eval()
    img, ref = _images(2, 3), _images(2, 4)
    with torch.no_grad():
        z = ae.encode(img)
        assert torch.equal(z, original.encode(img).latents)  # pre-quantisation latent
        expected = original.decode(z).sample  # quantise, post_quant_conv, decoder
        out = ae.decode(ae.encode(ref), z)
        out_other_ref = ae.decode(torch.randn_like(z), z)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_other_ref, expected, rtol=0, atol=1e-6)


def test_reference_changes_output_once_used():
    ae = RefAutoencoder(PRESETS["tiny"], _vq(PRESETS["tiny"])).eval()
    _randomise_ref_half(ae)
    img = _images(1, 5)
    with torch.no_grad():
        a = ae(_images(1, 6), img)
        b = ae(_images(1, 7), img)
    assert (a - b).abs().max() > 1e-3


def test_encode_rejects_bad_shapes():
    ae = RefAutoencoder.build(PRESETS["tiny"])
    with pytest.raises(ValueError, match="divisible by 4"):
        ae.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ae.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="differ in shape"):
        ae.decode(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 16))


def test_from_pretrained_loads_a_diffusers_folder(tmp_path):
    """The LDM path: a VQModel saved with save_pretrained loads (also from a pipeline folder
    holding `vqvae/`) and reproduces the original decode."""
    config = PRESETS["tiny"]
    vq = _vq(config, seed=3)
    vq.save_pretrained(tmp_path / "pipe" / "vqvae")
    img = _images(1, 8)
    with torch.no_grad():
        expected = vq.decode(vq.encode(img).latents).sample
    for folder in (tmp_path / "pipe" / "vqvae", tmp_path / "pipe"):
        ae = RefAutoencoder.from_pretrained(folder).eval()
        assert ae.config == config
        with torch.no_grad():
            z = ae.encode(img)  # batch of 1 like `expected` (conv sums vary with the batch)
            out = ae.decode(z, z)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_from_pretrained_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as e:
        RefAutoencoder.from_pretrained(missing)
    assert str(missing) in str(e.value)
    assert "ldm-celebahq-256" in str(e.value) and "--preset" in str(e.value)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable diffusers config"):
        RefAutoencoder.from_pretrained(bad)

    (bad / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(UserError, match="not a diffusers VQModel"):
        RefAutoencoder.from_pretrained(bad)

    # a valid config without its weights file
    vq_dir = tmp_path / "vq"
    _vq(PRESETS["tiny"]).save_pretrained(vq_dir)
    for weights in vq_dir.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(UserError, match="could not load"):
        RefAutoencoder.from_pretrained(vq_dir)

    # settings we do not reproduce
    raw = json.loads((vq_dir / "config.json").read_text())
    (vq_dir / "config.json").write_text(json.dumps({**raw, "norm_type": "spatial"}))
    with pytest.raises(UserError, match="norm_type"):
        RefAutoencoder.from_pretrained(vq_dir)


def test_save_load_roundtrip_and_fingerprint(tmp_path):
    torch.manual_seed(0)
    ae = RefAutoencoder.build(PRESETS["tiny"]).eval()
    _randomise_ref_half(ae)  # the widened conv_in must survive the round trip
    ae.save(tmp_path / "a")
    ae.save(tmp_path / "b")
    for name in (CONFIG_FILE, WEIGHTS_FILE):  # deterministic bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not list((tmp_path / "a" / ".tmp").iterdir())  # nothing half-written left over

    loaded = RefAutoencoder.load(tmp_path / "a").eval()
    assert loaded.config == ae.config
    assert loaded.fingerprint() == ae.fingerprint()
    img, ref = _images(1, 9), _images(1, 10)
    with torch.no_grad():
        assert torch.equal(loaded(ref, img), ae(ref, img))

    fp = ae.fingerprint()
    assert len(fp) == 64 and fp == ae.fingerprint()
    with torch.no_grad():
        ae.vq.quantize.embedding.weight[0, 0] += 1e-3
    assert ae.fingerprint() != fp
    torch.manual_seed(1)
    assert RefAutoencoder.build(PRESETS["tiny"]).fingerprint() != fp


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match=CONFIG_FILE):
        RefAutoencoder.load(tmp_path)
    ae = RefAutoencoder.build(PRESETS["tiny"])
    ae.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    meta["config"]["block_out_channels"] = [8, 16, 64]
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match"):
        RefAutoencoder.load(tmp_path / "m")


def test_commit_loss_and_gradients():
    """reconstruct returns a scalar commit loss; the reconstruction loss reaches the encoder
    (straight-through), the codebook (via commit) and BOTH halves of the decoder's conv_in."""
    torch.manual_seed(0)
    ae = RefAutoencoder.build(PRESETS["tiny"])
    img, ref = _images(2, 11, 32), _images(2, 12, 32)
    rec, commit = ae.reconstruct(ref, img)
    assert commit.shape == () and commit.item() > 0
    loss = ((rec - img) ** 2).mean() + commit
    loss.backward()
    conv_in = ae.vq.decoder.conv_in.weight.grad  # (C, 2d, 3, 3)
    assert conv_in[:, :3].abs().sum() > 0 and conv_in[:, 3:].abs().sum() > 0
    assert ae.vq.encoder.conv_in.weight.grad.abs().sum() > 0
    assert ae.vq.quantize.embedding.weight.grad.abs().sum() > 0


def test_finetuning_reduces_loss():
    """A few Adam steps on one pair lower ||F2 - D([E(F1), E(F2)])||^2 + commit."""
    torch.manual_seed(0)
    ae = RefAutoencoder.build(PRESETS["tiny"])
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    img, ref = _smooth_images(2, 13, 32), _smooth_images(2, 14, 32)
    losses = []
    for _ in range(40):
        rec, commit = ae.reconstruct(ref, img)
        loss = ((rec - img) ** 2).mean() + commit
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_config_from_dict_ignores_unknown_keys():
    raw = {**PRESETS["tiny"].vq_kwargs(), "_class_name": "VQModel", "scaling_factor": 0.18}
    raw["block_out_channels"] = list(raw["block_out_channels"])
    assert AutoencoderConfig.from_dict(raw) == PRESETS["tiny"]
    with pytest.raises(ValueError, match="norm_num_groups"):
        AutoencoderConfig(block_out_channels=(8, 12), norm_num_groups=8)
