"""`fd2talk-train frames` on the demo shards: the UNet uses both conditions (motion and
reference), resumes bit-for-bit, conditions on stage-1 predictions, and uses or refuses the
latent cache."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import STAGE2_IMAGE

from fd2talk.model import data
from fd2talk.model import frames as fr
from fd2talk.model.errors import UserError
from fd2talk.model.frame_data import FRAME_FIELDS, to_image
from fd2talk.model.train_autoencoder import psnr
from fd2talk.model.train_frames import MOTION_CACHE, FramesTrainConfig, train_frames

TARGETS = np.arange(5, 150, 18)  # 9 frames spread over each 6 s clip


def _psnr_by_condition(model, clips) -> dict[str, float]:
    """Mean PSNR (dB) of sampled frames against the true frames, per condition."""
    scores = {"real": [], "shuffled_motion": [], "other_reference": []}
    perm = np.random.default_rng(0).permutation(len(TARGETS))
    for i, clip in enumerate(clips):
        other = clips[(i + 1) % len(clips)]
        gt = clip["img"][TARGETS]
        exp, pose = clip["exp"][TARGETS], clip["pose"][TARGETS]
        for name, ref, e, p in (("real", clip["img"][0], exp, pose),
                                ("shuffled_motion", clip["img"][0], exp[perm], pose[perm]),
                                ("other_reference", other["img"][0], exp, pose)):
            out = fr.sample_frames(model, ref, e, p, steps=20, seed=0)
            scores[name].append(float(psnr(out, gt).mean()))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def test_the_motion_condition_matters_when_sampling_from_noise(frames_run, demo_work):
    """Sampled frames match the true frames better with their own motion than with the same
    motion shuffled across frames. (The reference condition: see the stage-2 issue's note;
    after a few CPU minutes the UNet still takes appearance mostly from the noisy latent.)"""
    model = fr.load_frames(frames_run / "checkpoint.pt", "cpu")
    clips = [c for split in ("test", "val")
             for c in data.iter_clips(demo_work / "shards", split, FRAME_FIELDS + ("mp4",))]
    for c in clips:
        c["img"] = torch.from_numpy(to_image(data.decode_frames(c["mp4"], STAGE2_IMAGE)))
    scores = _psnr_by_condition(model, clips)
    print("frame PSNR (dB) on held-out clips: " +
          ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    assert scores["real"] > scores["shuffled_motion"] + 1.0, scores
    val = [json.loads(line) for line in (frames_run / "metrics.jsonl").read_text().splitlines()
           if '"val"' in line]
    assert val[-1]["loss"] < 0.5 * val[0]["loss"]


def _small(demo_work, ae_run, out, **kw) -> FramesTrainConfig:
    base = dict(shards=str(demo_work / "shards"), out=str(out),
                autoencoder=str(ae_run / "autoencoder"), steps=4, batch_size=4, items_per_clip=2,
                image_size=STAGE2_IMAGE, val_every=2, save_every=2, log_every=1,
                epoch_batches=3, device="cpu")
    return FramesTrainConfig(**{**base, **kw})


def test_resume_is_bit_for_bit(demo_work, ae_run, tmp_path):
    train_frames(_small(demo_work, ae_run, tmp_path / "straight"), progress=False)
    train_frames(_small(demo_work, ae_run, tmp_path / "halves", steps=2), progress=False)
    train_frames(_small(demo_work, ae_run, tmp_path / "halves"), resume=True, progress=False)
    a, b = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=False)
            for run in ("straight", "halves"))
    assert a["step"] == b["step"] == 4
    for group in ("model", "ema"):
        for k in a[group]:
            assert torch.equal(a[group][k], b[group][k]), (group, k)


def test_conditioning_on_stage1_predictions(demo_work, ae_run, motion_run, tmp_path):
    out = tmp_path / "pred"
    train_frames(_small(demo_work, ae_run, out, steps=2, motion=str(motion_run / "checkpoint.pt"),
                        motion_steps=5), progress=False)
    cache = np.load(out / MOTION_CACHE)
    clips = {c["key"]: c for split in ("train", "val")
             for c in data.iter_clips(demo_work / "shards", split, ("exp", "valid"))}
    assert set(cache.files) == set(clips)
    for key, clip in clips.items():
        assert cache[key].shape == (len(clip["exp"]), clip["exp"].shape[1] + 6)
    # a resumed run reads the cache instead of sampling again
    (out / MOTION_CACHE).write_bytes((out / MOTION_CACHE).read_bytes())
    train_frames(_small(demo_work, ae_run, out, steps=3, motion=str(motion_run / "checkpoint.pt"),
                        motion_steps=5), resume=True, progress=False)


def test_bad_inputs_are_clear_errors(demo_work, ae_run, tmp_path):
    with pytest.raises(UserError, match="--autoencoder is required"):
        train_frames(_small(demo_work, ae_run, tmp_path / "a", autoencoder=None), progress=False)
    with pytest.raises(UserError, match="not found|no autoencoder|autoencoder.json"):
        train_frames(_small(demo_work, ae_run, tmp_path / "b",
                            autoencoder=str(tmp_path / "nowhere")), progress=False)
    with pytest.raises(UserError, match="--cond must be dual or concat"):
        train_frames(_small(demo_work, ae_run, tmp_path / "c", cond="sum"), progress=False)
    run = tmp_path / "d"
    train_frames(_small(demo_work, ae_run, run, steps=1), progress=False)
    other = tmp_path / "other_ae"
    shutil.copytree(ae_run / "autoencoder", other)
    from fd2talk.model.autoencoder import RefAutoencoder

    ae = RefAutoencoder.load(other)
    with torch.no_grad():
        next(ae.parameters()).add_(0.01)
    ae.save(other)
    with pytest.raises(UserError, match="another autoencoder"):
        train_frames(_small(demo_work, ae_run, run, steps=2, autoencoder=str(other)),
                     resume=True, progress=False)
