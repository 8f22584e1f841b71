"""`fd2talk-train frames` on the demo shards: the UNet uses both conditions (motion and
reference), resumes bit-for-bit (with colour jitter), conditions on stage-1 predictions, and
uses or refuses the latent cache."""

import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import STAGE2_IMAGE
from helpers.frames import psnr_by_condition

from fd2talk.core.errors import UserError
from fd2talk.model.data import loader as data
from fd2talk.model.data.folds import fold_keys
from fd2talk.model.data.frame_items import FRAME_FIELDS, FrameItems, jitter, to_image
from fd2talk.model.generation import frames as fr
from fd2talk.model.training.autoencoder import psnr
from fd2talk.model.training.frames import FramesTrainConfig, train_frames
from fd2talk.model.training.motion_cache import CACHE_META, MOTION_CACHE


def test_motion_and_reference_both_matter_when_sampling_from_noise(frames_run, demo_work):
    """On the held-out demo clips (two people, each video its own colours), sampled frames match
    the true frames better with their own motion than with the same motion shuffled across
    frames, and with their own first frame than with the other person's as the reference.
    bench/learning_spread.py over 3 training seeds: shuffled motion costs 2.2-2.6 dB; the
    other person's reference costs 1.1-6.0 dB on average and at least 0.59 dB on any clip
    (one seed's UNet leans on the reference far less than the others')."""
    model = fr.load_frames(frames_run, "cpu")
    clips = [
        c
        for split in ("test", "val")
        for c in data.iter_clips(demo_work / "shards", split, FRAME_FIELDS + ("mp4",))
    ]
    assert {c["meta"]["speaker_id"] for c in clips} == {"astronaut", "hopper"}
    for c in clips:
        c["img"] = torch.from_numpy(to_image(data.decode_frames(c["mp4"], STAGE2_IMAGE)))
    scores = psnr_by_condition(model, clips)
    print(
        "frame PSNR (dB) on held-out clips: "
        + ", ".join(f"{k} {np.round(v, 2)}" for k, v in scores.items())
    )
    mean = {k: v.mean() for k, v in scores.items()}
    assert mean["real"] > mean["shuffled_motion"] + 1.0, scores
    assert mean["real"] > mean["other_reference"] + 0.5, scores
    assert (scores["real"] > scores["other_reference"]).all(), scores
    val = [
        json.loads(line)
        for line in (frames_run / "metrics.jsonl").read_text().splitlines()
        if '"val"' in line
    ]
    assert val[-1]["loss"] < 0.5 * val[0]["loss"]


def test_jitter_recolours_reference_and_target_alike():
    rng = np.random.default_rng(0)
    ref, frame = (rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32) for _ in range(2))
    assert jitter([ref, frame], random.Random(0), 0.0) == [ref, frame]  # 0: untouched
    draws = [jitter([ref, frame], random.Random(s), 0.2) for s in range(6)]
    a, b = draws[0]
    assert np.array_equal(a, jitter([ref, frame], random.Random(0), 0.2)[0])  # deterministic
    # one transform for both: per output channel, the same affine map of the same input channel
    for x, y in draws:
        for c in range(3):
            src = next(
                k for k in range(3) if abs(np.corrcoef(x[c].ravel(), ref[k].ravel())[0, 1]) > 0.99
            )
            inside = np.abs(x[c]) < 1  # not clipped
            fit = np.polyfit(ref[src][inside], x[c][inside], 1)
            keep = (np.abs(x[c]) < 1) & (np.abs(y[c]) < 1)  # not clipped
            pred = np.polyval(fit, frame[src])
            assert np.allclose(pred[keep], y[c][keep], atol=1e-5)
            assert 0.8 - 1e-6 <= fit[0] <= 1.2 + 1e-6 and abs(fit[1]) <= 0.2 + 1e-6
    assert len({tuple(np.round(x.mean((1, 2)), 4)) for x, _ in draws}) == 6  # they differ
    with pytest.raises(ValueError, match="latent cache"):
        FrameItems(latents=True, jitter=0.2)


def _small(demo_work, ae_run, out, **kw) -> FramesTrainConfig:
    base = dict(
        shards=str(demo_work / "shards"),
        out=str(out),
        autoencoder=str(ae_run / "autoencoder"),
        steps=4,
        batch_size=4,
        items_per_clip=2,
        image_size=STAGE2_IMAGE,
        val_every=2,
        save_every=2,
        log_every=1,
        epoch_batches=3,
        device="cpu",
    )
    return FramesTrainConfig(**{**base, **kw})


def _flat(value, prefix: str = "") -> dict:
    """Every leaf of a checkpoint's models, EMAs and optimizers, by a flat name."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}.{key}").items()
        }
    if isinstance(value, (list, tuple)):
        return {
            k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}.{i}").items()
        }
    return {prefix: value}


def test_resume_is_bit_for_bit(demo_work, ae_run, tmp_path):
    """Halves + resume = one straight run: every weight, EMA weight and optimizer moment, the
    generator, and the metrics log (validation and train rows)."""
    kw = dict(jitter=0.2)  # the jitter draws come from the item stream: resumed alike
    train_frames(_small(demo_work, ae_run, tmp_path / "straight", **kw), progress=False)
    train_frames(_small(demo_work, ae_run, tmp_path / "halves", steps=2, **kw), progress=False)
    train_frames(_small(demo_work, ae_run, tmp_path / "halves", **kw), resume=True, progress=False)
    a, b = (
        torch.load(tmp_path / run / "checkpoint.pt", weights_only=False)
        for run in ("straight", "halves")
    )
    assert a["step"] == b["step"] == 4
    fa, fb = ({g: s[g] for g in ("models", "ema", "optimizers")} for s in (a, b))
    fa, fb = _flat(fa), _flat(fb)
    assert set(fa) == set(fb) and any(k.startswith(".optimizers.unet.state") for k in fa)
    for k in fa:
        va, vb = fa[k], fb[k]
        assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, k
    assert all(
        torch.equal(x["generator"], y["generator"])
        for x, y in zip(a["ranks"], b["ranks"], strict=True)
    )
    logs = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("straight", "halves")]
    assert logs[0] == logs[1] and '"val"' in logs[0] and '"train"' in logs[0]


def _last_val_loss(out) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "val"][-1]


def _fresh_again(out) -> None:
    """What a run killed before its first checkpoint leaves: the cache, no checkpoint."""
    for name in ("checkpoint.pt", "metrics.jsonl", "config.json"):
        (out / name).unlink()
    shutil.rmtree(out / "model")


def test_conditioning_on_stage1_predictions(demo_work, ae_run, motion_run, tmp_path):
    """The UNet is conditioned on exactly the cached stage-1 predictions: replaced by the
    ground truth, a run's weights and validation loss equal a ground-truth run's, and with the
    predictions its weights differ (2 steps)."""
    gt = tmp_path / "gt"
    train_frames(_small(demo_work, ae_run, gt, steps=2), progress=False)
    out = tmp_path / "pred"
    pred = dict(motion=str(motion_run), motion_steps=5)
    train_frames(_small(demo_work, ae_run, out, steps=2, **pred), progress=False)

    def unet(run):
        return torch.load(run / "checkpoint.pt", weights_only=False)["models"]["unet"]

    # the predictions reach the UNet: its conditioning weights' gradients differ (its val loss
    # may agree to the 6 logged decimals after 2 steps: the zero-initialised path is small)
    a, b = unet(out), unet(gt)
    assert not all(torch.equal(a[k], b[k]) for k in a)
    with np.load(out / MOTION_CACHE) as z:
        cache = {k: z[k] for k in z.files}
    clips = {
        c["key"]: c
        for split in ("train", "val")
        for c in data.iter_clips(demo_work / "shards", split, ("exp", "pose", "valid"))
    }
    assert set(cache) - {CACHE_META} == set(clips)
    for key, clip in clips.items():
        assert cache[key].shape == (len(clip["exp"]), clip["exp"].shape[1] + 6)
        assert not np.allclose(cache[key][:, :52], clip["exp"])
        cache[key] = np.concatenate([clip["exp"], clip["pose"]], 1).astype(np.float32)
    np.savez(out / MOTION_CACHE, **cache)  # same record of what made it: reused as is
    _fresh_again(out)
    train_frames(_small(demo_work, ae_run, out, steps=2, **pred), progress=False)
    assert _last_val_loss(out) == _last_val_loss(gt)
    a, b = unet(out), unet(gt)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_predicted_motion_is_sampled_again_when_its_maker_changes(
    demo_work, ae_run, motion_run, tmp_path, capsys
):
    """A restart with other stage-1 settings (steps, seed, another model) never trains on the
    old predictions: the cache records what made it and is sampled again on a mismatch."""
    out = tmp_path / "run"
    train_frames(
        _small(demo_work, ae_run, out, steps=0, motion=str(motion_run), motion_steps=3),
        progress=False,
    )

    def meta() -> dict:
        with np.load(out / MOTION_CACHE) as z:
            return json.loads(str(z[CACHE_META]))

    first = meta()
    assert first["steps"] == 3 and first["sampler"] == "joint" and len(first["motion"]) == 64
    _fresh_again(out)
    capsys.readouterr()
    train_frames(
        _small(demo_work, ae_run, out, steps=0, motion=str(motion_run), motion_steps=4),
        progress=False,
    )
    assert meta()["steps"] == 4 and meta()["motion"] == first["motion"]
    assert "made with another steps" in capsys.readouterr().err
    # another stage-1 model: a one-step continuation of the same run has other weights
    other = tmp_path / "other_motion"
    shutil.copytree(motion_run, other)
    from fd2talk.model.configs import MotionTrainConfig
    from fd2talk.model.training.motion import train_motion

    saved = json.loads((other / "config.json").read_text())["config"]
    train_motion(
        MotionTrainConfig(**{**saved, "out": str(other), "steps": saved["steps"] + 1}),
        resume=True,
        progress=False,
    )
    _fresh_again(out)
    train_frames(
        _small(demo_work, ae_run, out, steps=0, motion=str(other), motion_steps=4), progress=False
    )
    assert meta()["motion"] != first["motion"]


def test_cross_fitted_expression_comes_from_the_fold_that_left_the_clip_out(
    demo_work, ae_run, motion_run, tmp_path
):
    """With --motion-fold, a training clip's expression is its fold model's prediction and its
    pose the full model's; validation clips keep the full model's. Fold runs that are not one
    whole K/N split, or folds without --motion, are refused."""
    from fd2talk.model.configs import MotionTrainConfig
    from fd2talk.model.generation import motion as motion_mod
    from fd2talk.model.store.folder import load_parts
    from fd2talk.model.training.distributed import setup_distributed
    from fd2talk.model.training.motion import train_motion
    from fd2talk.model.training.motion_cache import predicted_motion

    shards = demo_work / "shards"
    folds = [tmp_path / f"fold{k}" for k in range(2)]
    for k, out in enumerate(folds):
        train_motion(
            MotionTrainConfig(
                shards=str(shards),
                out=str(out),
                steps=2,
                batch_size=4,
                lambda_sync=0,
                val_split=None,
                device="cpu",
                fold=f"{k}/2",
            ),
            progress=False,
        )
    out = tmp_path / "run"
    pred = dict(motion=str(motion_run), motion_steps=3, motion_folds=tuple(map(str, folds)))
    train_frames(_small(demo_work, ae_run, out, steps=0, **pred), progress=False)
    with np.load(out / MOTION_CACHE) as z:
        cache = {k: z[k] for k in z.files}
    assert len(json.loads(str(cache.pop(CACHE_META)))["folds"]) == 2
    d = setup_distributed("cpu")

    def sampled(run, keys):
        part = load_parts([str(run)])["motion"]
        return predicted_motion(
            motion_mod.from_part(part, "cpu"), str(shards), ("train", "val"), 3, 0, d, False, keys
        )

    full = sampled(motion_run, None)
    for k, run in enumerate(folds):
        held = fold_keys(shards, k, 2)
        own = sampled(run, set(held))
        for key in held:
            np.testing.assert_array_equal(cache[key][:, :-6], own[key][:, :-6])
            np.testing.assert_array_equal(cache[key][:, -6:], full[key][:, -6:])
            assert not np.array_equal(cache[key][:, :-6], full[key][:, :-6])
    val = [c["key"] for c in data.iter_clips(shards, "val", ("valid",))]
    assert val and all(np.array_equal(cache[key], full[key]) for key in val)
    for bad, match in (
        ((str(folds[0]),), "one run per fold"),
        ((str(folds[0]), str(folds[0])), "not the N runs"),
        ((str(folds[0]), str(motion_run)), "not trained with"),
    ):
        with pytest.raises(UserError, match=match):
            train_frames(
                _small(
                    demo_work, ae_run, tmp_path / "bad", steps=0, **{**pred, "motion_folds": bad}
                ),
                progress=False,
            )
    with pytest.raises(UserError, match="--motion-fold needs --motion"):
        train_frames(
            _small(demo_work, ae_run, tmp_path / "bad", steps=0, motion_folds=pred["motion_folds"]),
            progress=False,
        )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.train import main; main()",
            "frames",
            "--shards",
            str(shards),
            "--out",
            str(tmp_path / "cli"),
            "--autoencoder",
            str(ae_run / "autoencoder"),
            "--motion",
            str(motion_run),
            "--motion-fold",
            str(folds[1]),
            "--motion-fold",
            str(folds[1]),
            "--image-size",
            "64",
            "--steps",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "not the N runs" in r.stderr and str(folds[1]) in r.stderr


def test_the_demo_recipe_trains_a_run_an_older_recipe_made_again(
    demo_work, ae_run, motion_run, tmp_path
):
    """`fd2talk-train demo` resumes a run its own recipe made (config.json, tuples recorded
    as lists, a setting newer than the run counting as its default) and trains one that an
    older recipe made again; so is every run after one whose weights changed."""
    import dataclasses

    from fd2talk.model.configs import MotionTrainConfig
    from fd2talk.model.training.recipe import stale, train_run

    folds = [
        MotionTrainConfig(
            shards=str(demo_work / "shards"),
            out=str(tmp_path / f"fold{k}"),
            steps=2,
            batch_size=4,
            lambda_sync=0,
            val_split=None,
            device="cpu",
            fold=f"{k}/2",
        )
        for k in range(2)
    ]
    fold = folds[0]
    assert not stale(fold)  # nothing there yet
    for cfg in folds:
        assert train_run("motion", cfg, progress=False, restart=False) is True  # trained
    frames = _small(
        demo_work,
        ae_run,
        tmp_path / "frames",
        steps=1,
        motion=str(motion_run),
        motion_steps=3,
        motion_folds=tuple(cfg.out for cfg in folds),
    )
    assert train_run("frames", frames, progress=False, restart=False) is True
    assert not stale(frames)  # the folds' tuple against config.json's list
    assert stale(dataclasses.replace(frames, motion_folds=frames.motion_folds[::-1]))
    # the same recipe again: every run resumes, finished, and nothing after it starts again
    assert train_run("motion", fold, progress=False, restart=False) is False
    assert train_run("frames", frames, progress=False, restart=False) is False

    assert not stale(fold) and not stale(dataclasses.replace(fold, steps=5, log_every=3))
    assert stale(dataclasses.replace(fold, fold="1/2"))
    assert stale(dataclasses.replace(fold, lr=fold.lr / 2))
    record = tmp_path / "fold0" / "config.json"
    doc = json.loads(record.read_text())
    for name in ("fold", "epoch_batches"):  # settings newer than the run: their defaults
        doc["config"].pop(name)
    record.write_text(json.dumps(doc))
    assert stale(fold) and not stale(dataclasses.replace(fold, fold=None))
    doc["config"]["fold"] = fold.fold
    record.write_text(json.dumps(doc))
    assert not stale(fold)  # epoch_batches: the run had the default, as the recipe
    assert stale(dataclasses.replace(fold, epoch_batches=7))

    marker = tmp_path / "fold0" / "older"
    marker.touch()
    assert (
        train_run(
            "motion", dataclasses.replace(fold, lr=fold.lr / 2), progress=False, restart=False
        )
        is True
    )  # an older recipe's: trained again
    assert not marker.exists()
    marker.touch()  # a run after one whose weights changed starts again
    assert train_run("motion", fold, progress=False, restart=True) is True
    assert not marker.exists()
    # more steps than the run has: it resumes, and the runs after it must start again
    assert (
        train_run("motion", dataclasses.replace(fold, steps=3), progress=False, restart=False)
        is True
    )
    assert not stale(fold)


def test_bad_inputs_are_clear_errors(demo_work, ae_run, tmp_path):
    with pytest.raises(UserError, match="--autoencoder is required"):
        train_frames(_small(demo_work, ae_run, tmp_path / "a", autoencoder=None), progress=False)
    with pytest.raises(UserError, match="not found|no autoencoder|autoencoder.json"):
        train_frames(
            _small(demo_work, ae_run, tmp_path / "b", autoencoder=str(tmp_path / "nowhere")),
            progress=False,
        )
    with pytest.raises(UserError, match="--cond must be dual or concat"):
        train_frames(_small(demo_work, ae_run, tmp_path / "c", cond="sum"), progress=False)
    # the autoencoder retrained in place under a run: refused on resume
    own = tmp_path / "own_ae"
    shutil.copytree(ae_run / "autoencoder", own)
    run = tmp_path / "d"
    train_frames(_small(demo_work, ae_run, run, steps=1, autoencoder=str(own)), progress=False)
    from fd2talk.model.nets.autoencoder import RefAutoencoder

    ae = RefAutoencoder.load(own)
    with torch.no_grad():
        next(ae.parameters()).add_(0.01)
    ae.save(own)
    with pytest.raises(UserError, match="trained with another autoencoder"):
        train_frames(
            _small(demo_work, ae_run, run, steps=2, autoencoder=str(own)),
            resume=True,
            progress=False,
        )
    no_scale = tmp_path / "no_scale"
    ae.scaling_factor = None
    ae.save(no_scale)
    with pytest.raises(UserError, match="no measured latent scaling factor"):
        train_frames(
            _small(demo_work, ae_run, tmp_path / "e", autoencoder=str(no_scale)), progress=False
        )
    assert not (tmp_path / "e").exists()  # refused before anything was written


def test_on_the_shared_real_clips_motion_and_reference_both_matter(real_work, tmp_path):
    """Three speakers: the autoencoder's PSNR rises, and sampled frames are closer to the truth
    with their own motion than with shuffled motion, and with their own reference than with
    another speaker's."""
    from fd2talk.model.training.autoencoder import AutoencoderTrainConfig, train_autoencoder

    shards = str(real_work / "shards")
    ae = tmp_path / "ae"
    train_autoencoder(
        AutoencoderTrainConfig(
            shards=shards,
            out=str(ae),
            steps=300,
            batch_size=8,
            lr=1e-3,
            lambda_per=0,
            image_size=STAGE2_IMAGE,
            val_every=150,
            log_every=50,
            epoch_batches=100,
            device="cpu",
        ),
        progress=False,
    )
    val = [
        json.loads(line)
        for line in (ae / "metrics.jsonl").read_text().splitlines()
        if '"val"' in line
    ]
    train_frames(
        FramesTrainConfig(
            shards=shards,
            out=str(tmp_path / "frames"),
            autoencoder=str(ae / "autoencoder"),
            steps=600,
            batch_size=16,
            lr=1e-3,
            image_size=STAGE2_IMAGE,
            val_every=300,
            log_every=50,
            epoch_batches=100,
            device="cpu",
        ),
        progress=False,
    )
    model = fr.load_frames(tmp_path / "frames" / "checkpoint.pt", "cpu")
    clips = list(data.iter_clips(shards, "val", FRAME_FIELDS + ("mp4",)))
    scores = {"real": [], "shuffled_motion": [], "other_reference": []}
    for i, clip in enumerate(clips):
        img = torch.from_numpy(to_image(data.decode_frames(clip["mp4"], STAGE2_IMAGE)))
        other = data.decode_frames(clips[(i + 1) % len(clips)]["mp4"], STAGE2_IMAGE)[0]
        idx = np.linspace(1, len(img) - 1, 8).astype(int)
        perm = np.random.default_rng(0).permutation(len(idx))
        exp, pose = clip["exp"][idx], clip["pose"][idx]
        for name, ref, e, p in (
            ("real", img[0], exp, pose),
            ("shuffled_motion", img[0], exp[perm], pose[perm]),
            ("other_reference", torch.from_numpy(to_image(other)), exp, pose),
        ):
            out = torch.cat(list(fr.iter_frames(model, ref, e, p, steps=20, seed=0)))
            scores[name].append(float(psnr(out, img[idx]).mean()))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    print(
        f"real clips: autoencoder PSNR {val[0]['psnr']:.2f} -> {val[-1]['psnr']:.2f} dB; "
        "frame PSNR (dB) " + ", ".join(f"{k} {np.round(v, 2)}" for k, v in scores.items())
    )
    assert val[-1]["psnr"] > val[0]["psnr"] + 5.0
    assert mean["real"] > mean["shuffled_motion"] + 0.3, scores
    assert mean["real"] > mean["other_reference"] + 1.5, scores
