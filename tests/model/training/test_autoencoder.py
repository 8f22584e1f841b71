"""`fd2talk-train autoencoder` on the demo shards: held-out PSNR rises, the run writes the
autoencoder the later stages load, and LPIPS without its VGG weights is a clear error."""

import json

import numpy as np
import pytest
import torch
from helpers import STAGE2_IMAGE

from fd2talk.core.errors import UserError
from fd2talk.model.nets.autoencoder import RefAutoencoder
from fd2talk.model.training.autoencoder import AutoencoderTrainConfig, psnr, train_autoencoder


def test_psnr_on_held_out_frames_rises_well_above_step_0(ae_run):
    val = [
        json.loads(line)
        for line in (ae_run / "metrics.jsonl").read_text().splitlines()
        if '"val"' in line
    ]
    first, last = val[0], val[-1]
    print(
        f"autoencoder PSNR on val pairs: step {first['step']} {first['psnr']:.2f} dB -> "
        f"step {last['step']} {last['psnr']:.2f} dB"
    )
    assert first["step"] == 0 and last["psnr"] > first["psnr"] + 5.0
    ae = RefAutoencoder.load(ae_run / "autoencoder")  # what latents / frames / generate load
    state = torch.load(ae_run / "checkpoint.pt", weights_only=False)
    assert ae.fingerprint() == RefAutoencoder.load(ae_run / "autoencoder").fingerprint()
    assert state["kind"] == "autoencoder" and state["step"] > 0


def test_psnr_values():
    a = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(
        psnr(a, a + 0.02), torch.full((2,), 10 * torch.log10(torch.tensor(4.0 / 0.0004)))
    )


def test_lpips_without_vgg_weights_says_how_to_get_them(demo_work, tmp_path, monkeypatch):
    monkeypatch.setenv("FD2TALK_VGG16", str(tmp_path / "missing.pth"))
    cfg = AutoencoderTrainConfig(
        shards=str(demo_work / "shards"),
        out=str(tmp_path / "r"),
        steps=1,
        device="cpu",
        image_size=64,
    )
    with pytest.raises(UserError, match="vgg16-397923af.pth.*--lambda-per 0"):
        train_autoencoder(cfg, progress=False)


def test_latent_scaling_factor_is_measured_over_many_clips_and_saved(ae_run, demo_work):
    """The autoencoder folder carries 1 / std of the latents of frames of every training clip
    (not of one clip): recomputed by hand over all 7 clips it agrees, and one clip alone
    gives another number."""
    from fd2talk.model.data import latent_scale
    from fd2talk.model.data import loader as data
    from fd2talk.model.data.frame_items import to_image
    from fd2talk.model.nets.autoencoder import RefAutoencoder

    ae = RefAutoencoder.load(ae_run / "autoencoder")
    shards = str(demo_work / "shards")
    assert ae.scaling_factor == pytest.approx(
        latent_scale.measure(ae, shards, STAGE2_IMAGE, "cpu"), rel=1e-6
    )
    zs = []
    clips = list(data.iter_clips(shards, "train", ("valid", "mp4")))
    assert len(clips) == 7
    for clip in clips:
        frames = data.decode_frames(clip["mp4"], STAGE2_IMAGE)
        pick = np.linspace(0, len(frames) - 1, latent_scale.FRAMES_PER_CLIP).round().astype(int)
        with torch.no_grad():
            zs.append(ae.encode(torch.from_numpy(to_image(frames[pick]))))
    assert ae.scaling_factor == pytest.approx(float(1 / torch.cat(zs).std()), rel=1e-4)
    one = latent_scale.measure(ae, shards, STAGE2_IMAGE, "cpu", max_clips=1)
    assert abs(one - ae.scaling_factor) > 1e-3 * ae.scaling_factor
