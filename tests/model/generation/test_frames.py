"""Stage-2 sampling: batched frames from a reference and motion, and loading stage 2 only
with the autoencoder it was trained with."""

import pytest
import torch
from helpers import STAGE2_IMAGE

from fd2talk.core.errors import UserError
from fd2talk.model.data import loader as data
from fd2talk.model.data.frame_items import to_image
from fd2talk.model.generation import frames as fr


def _all_frames(model, ref, exp, pose, **options) -> torch.Tensor:
    """Every frame (F, 3, H, W) at once: `iter_frames`' batches joined."""
    return torch.cat(list(fr.iter_frames(model, ref, exp, pose, **options)))


def test_frames_any_count_batched_or_not(frames_run, demo_work):
    model = fr.load_frames(frames_run, "cpu")  # the run directory: its model folder
    clip = next(data.iter_clips(demo_work / "shards", "test", ("exp", "pose", "valid", "mp4")))
    size = STAGE2_IMAGE  # what the fixture trained on
    ref = torch.from_numpy(to_image(data.decode_frames(clip["mp4"], size)[0]))
    out = _all_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3)
    assert out.shape == (7, 3, size, size) and out.abs().max() <= 1
    again = _all_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3)
    assert torch.equal(out, again)  # a seed fixes the frames
    for chunk in (1, 7):  # a per-frame loop, one batch: the same frames (eta = 0)
        other = _all_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=chunk)
        torch.testing.assert_close(other, out, rtol=1e-4, atol=1e-4)
    seeded = _all_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, seed=1)
    assert (seeded - out).abs().mean() > 1e-3  # and the seed matters
    latent = model.ae.encode(ref[None])[0]  # a latent reference: no image to calibrate with
    same = _all_frames(
        model, latent, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3, ref_latent=True
    )
    raw = _all_frames(
        model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3, calibrate=False
    )
    torch.testing.assert_close(same, raw)
    # the colour calibration: the per-channel affine map that takes the autoencoder's
    # rendering of the reference onto the reference (means and spreads land exactly), applied
    # to every frame
    gain, offset = fr.colour_calibration(model, ref[None], latent[None])
    rt = model.ae.decode(latent[None], latent[None]).clamp(-1, 1)
    fixed = rt * gain + offset
    assert ((gain > 0.5) & (gain < 2.0)).all()  # not at the clamp: the spreads can match
    torch.testing.assert_close(fixed.mean((0, 2, 3)), ref.mean((1, 2)), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        fixed.std((0, 2, 3), correction=0), ref.std((1, 2), correction=0), atol=1e-4, rtol=0
    )
    inside = raw.abs() < 0.999  # where the uncalibrated frames were not clipped
    torch.testing.assert_close(
        out[inside], (raw * gain + offset).clamp(-1, 1)[inside], atol=1e-5, rtol=0
    )


def test_load_refuses_other_checkpoints_and_autoencoders(frames_run, ae_run, motion_run, tmp_path):
    with pytest.raises(UserError, match="holds no frames model .it has: motion"):
        fr.load_frames(motion_run / "checkpoint.pt", "cpu")
    from fd2talk.model.nets.autoencoder import PRESETS, RefAutoencoder

    torch.manual_seed(5)
    RefAutoencoder.build(PRESETS["tiny"]).save(tmp_path / "other")
    with pytest.raises(UserError, match="was trained with autoencoder .* use the autoencoder"):
        fr.load_frames(frames_run / "checkpoint.pt", "cpu", autoencoder=str(tmp_path / "other"))
