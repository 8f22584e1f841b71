"""Stage-2 sampling: batched frames from a reference and motion, and the reference crop of
any portrait (a portrait without a face is a clear error)."""

import numpy as np
import pytest
import torch
from helpers import STAGE2_IMAGE

from fd2talk.core.errors import UserError
from fd2talk.model.data import loader as data
from fd2talk.model.data.frame_items import to_image
from fd2talk.model.generation import frames as fr


def test_sample_frames_any_count_batched_or_not(frames_run, demo_work):
    model = fr.load_frames(frames_run, "cpu")  # the run directory: its model folder
    clip = next(data.iter_clips(demo_work / "shards", "test", ("exp", "pose", "valid", "mp4")))
    size = STAGE2_IMAGE  # what the fixture trained on
    ref = torch.from_numpy(to_image(data.decode_frames(clip["mp4"], size)[0]))
    out = fr.sample_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3)
    assert out.shape == (7, 3, size, size) and out.abs().max() <= 1
    again = fr.sample_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3)
    assert torch.equal(out, again)  # a seed fixes the frames
    for chunk in (1, 7):  # a per-frame loop, one batch: the same frames (eta = 0)
        other = fr.sample_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4,
                                 chunk=chunk)
        torch.testing.assert_close(other, out, rtol=1e-4, atol=1e-4)
    seeded = fr.sample_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, seed=1)
    assert (seeded - out).abs().mean() > 1e-3  # and the seed matters
    latent = model.ae.encode(ref[None])[0]  # a latent reference: no image to calibrate with
    same = fr.sample_frames(model, latent, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3,
                            ref_latent=True)
    raw = fr.sample_frames(model, ref, clip["exp"][:7], clip["pose"][:7], steps=4, chunk=3,
                           calibrate=False)
    torch.testing.assert_close(same, raw)
    # the colour calibration: the per-channel affine map that takes the autoencoder's
    # rendering of the reference onto the reference (means and spreads land exactly), applied
    # to every frame
    gain, offset = fr.colour_calibration(model, ref[None], latent[None])
    rt = model.ae.decode(latent[None], latent[None]).clamp(-1, 1)
    fixed = rt * gain + offset
    assert ((gain > 0.5) & (gain < 2.0)).all()  # not at the clamp: the spreads can match
    torch.testing.assert_close(fixed.mean((0, 2, 3)), ref.mean((1, 2)), atol=1e-4, rtol=0)
    torch.testing.assert_close(fixed.std((0, 2, 3), correction=0), ref.std((1, 2), correction=0),
                               atol=1e-4, rtol=0)
    inside = raw.abs() < 0.999  # where the uncalibrated frames were not clipped
    torch.testing.assert_close(out[inside], (raw * gain + offset).clamp(-1, 1)[inside],
                               atol=1e-5, rtol=0)


def test_load_refuses_other_checkpoints_and_autoencoders(frames_run, ae_run, motion_run,
                                                         tmp_path):
    with pytest.raises(UserError, match="holds no frames model .it has: motion"):
        fr.load_frames(motion_run / "checkpoint.pt", "cpu")
    from fd2talk.model.nets.autoencoder import PRESETS, RefAutoencoder

    torch.manual_seed(5)
    RefAutoencoder.build(PRESETS["tiny"]).save(tmp_path / "other")
    with pytest.raises(UserError, match="was trained with autoencoder .* use the autoencoder"):
        fr.load_frames(frames_run / "checkpoint.pt", "cpu", autoencoder=str(tmp_path / "other"))


def test_find_reference_finds_the_face_or_says_there_is_none(shared_media, face_model):
    import cv2

    from fd2talk.model.generation.pipeline import find_reference

    image = cv2.cvtColor(cv2.imread(str(shared_media / "faces" / "000002.jpg")), cv2.COLOR_BGR2RGB)
    ref = find_reference(image, str(face_model))
    assert ref.crop.shape == (256, 256, 3) and ref.crop.dtype == np.uint8 and ref.faces == 1
    blank = np.full((300, 400, 3), 127, np.uint8)  # no face anywhere
    with pytest.raises(UserError, match="no face found in the portrait"):
        find_reference(blank, str(face_model))


def test_find_reference_on_the_demo_portrait(demo_work, face_model):
    from fd2talk.model.generation.pipeline import find_reference

    clip = next(data.iter_clips(demo_work / "shards", "test", ("valid", "mp4")))
    frame = data.decode_frames(clip["mp4"])[0]  # already a 256 crop: the face fills it
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:356, 300:556] = frame
    crop = find_reference(canvas, str(face_model)).crop
    assert crop.shape == (256, 256, 3)
    assert crop.mean() > 0.5 * frame.mean()  # the crop is on the face, not the black canvas
