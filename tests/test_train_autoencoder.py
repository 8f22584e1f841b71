"""`fd2talk-train autoencoder` on the demo shards: held-out PSNR rises, the run writes the
autoencoder the later stages load, and LPIPS without its VGG weights is a clear error."""

import json

import pytest
import torch

from fd2talk.model.autoencoder import RefAutoencoder
from fd2talk.model.errors import UserError
from fd2talk.model.train_autoencoder import AutoencoderTrainConfig, psnr, train_autoencoder


def test_psnr_on_held_out_frames_rises_well_above_step_0(ae_run):
    val = [json.loads(line) for line in (ae_run / "metrics.jsonl").read_text().splitlines()
           if '"val"' in line]
    first, last = val[0], val[-1]
    print(f"autoencoder PSNR on val pairs: step {first['step']} {first['psnr']:.2f} dB -> "
          f"step {last['step']} {last['psnr']:.2f} dB")
    assert first["step"] == 0 and last["psnr"] > first["psnr"] + 5.0
    ae = RefAutoencoder.load(ae_run / "autoencoder")  # what latents / frames / generate load
    state = torch.load(ae_run / "checkpoint.pt", weights_only=False)
    assert ae.fingerprint() == RefAutoencoder.load(ae_run / "autoencoder").fingerprint()
    assert state["kind"] == "autoencoder" and state["step"] > 0


def test_psnr_values():
    a = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(psnr(a, a + 0.02), torch.full((2,), 10 * torch.log10(torch.tensor(
        4.0 / 0.0004))))


def test_lpips_without_vgg_weights_says_how_to_get_them(demo_work, tmp_path, monkeypatch):
    monkeypatch.setenv("FD2TALK_VGG16", str(tmp_path / "missing.pth"))
    cfg = AutoencoderTrainConfig(shards=str(demo_work / "shards"), out=str(tmp_path / "r"),
                                 steps=1, device="cpu", image_size=64)
    with pytest.raises(UserError, match="vgg16-397923af.pth.*--lambda-per 0"):
        train_autoencoder(cfg, progress=False)
