"""Stage-1 sampling from a checkpoint: any length, from an audio file, and windows stitched
without a jump at their boundaries."""

import numpy as np
import pytest

from fd2talk.core.errors import UserError
from fd2talk.core.schema import SAMPLE_RATE
from fd2talk.model.data import loader as data
from fd2talk.model.generation import motion


def test_window_starts_cover_any_length():
    assert motion.window_starts(25) == [0]
    assert motion.window_starts(10) == [0]
    assert motion.window_starts(60, 25, 8) == [0, 17, 34, 35]
    for frames in range(25, 200, 7):
        starts = motion.window_starts(frames, 25, 8)
        assert starts[0] == 0 and starts[-1] + 25 == frames
        assert all(0 < b - a <= 17 for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError):
        motion.window_starts(50, 25, 25)


def _voices(demo_work) -> dict[str, np.ndarray]:
    """Long audio features in both demo voices: the espeak-ng speech of the held-out clips
    (12 s, 17 windows) and 12 s of the synthetic voice."""
    from fd2talk.model.demo.speech import normalise, synthetic_speech
    from fd2talk.pipeline.backends.audio_features import LogMel

    espeak = np.concatenate([c["audio"] for c in data.iter_clips(demo_work / "shards", "test")])
    wav = normalise(synthetic_speech(12 * SAMPLE_RATE, SAMPLE_RATE, np.random.default_rng(0)))
    return {
        "espeak": espeak.astype(np.float32),
        "synthetic": LogMel().features(wav.astype(np.float32), 300).astype(np.float32),
    }


def test_boundary_steps_find_the_window_edges():
    x = np.zeros((60, 2))
    x[17:, 0] = 1.0  # a jump into frame 17, where the second window starts
    starts = motion.window_starts(60, 25, 8)  # [0, 17, 34, 35]: edges 17, 25, 34, 35, 42, 59
    at, inside = motion.boundary_steps(x, starts)
    assert len(at) == 6 and len(at) + len(inside) == 59
    assert at.sum() == 1.0 and inside.sum() == 0.0


def test_no_jump_at_window_boundaries(motion_run, demo_work):
    """Joint sampling leaves no seam: over three sampling seeds and both demo voices, the
    frame-to-frame change into frames where a window starts or ends is below the in-window
    90th percentile in every run, and on average within 1.3x the in-window mean.
    bench/motion_seams.py, over 3 training seeds x 5 sampling seeds x 2 voices: boundary /
    in-window mean 1.01 (0.79-1.34 per run, sd 0.14), / p90 at most 0.62; independent windows
    give about 3 at their seams."""
    model = motion.load_motion(motion_run, "cpu")
    ratios = []
    for voice, feats in _voices(demo_work).items():
        starts = motion.window_starts(len(feats), data.WINDOW, motion.OVERLAP)
        assert len(starts) >= 17
        for seed in (0, 1, 2):
            exp = motion.sample(model, feats, seed=seed)["exp"]
            assert exp.shape == (len(feats), 52)
            at, inside = motion.boundary_steps(model.stats.normalize("exp", exp), starts)
            ratios.append(at.mean() / inside.mean())
            print(
                f"{voice} seed {seed}: boundary {at.mean():.3f}, inside mean "
                f"{inside.mean():.3f}, p90 {np.percentile(inside, 90):.3f}"
            )
            assert at.mean() < np.percentile(inside, 90)
    print(f"boundary / in-window mean: {np.round(ratios, 2)}")
    assert np.mean(ratios) < 1.3


def test_sampling_from_an_audio_file_any_length(motion_run, demo_work):
    model = motion.load_motion(motion_run / "checkpoint.pt", "cpu")  # a checkpoint loads too
    wav = sorted((demo_work / "crops").glob("*.wav"))[0]
    out = motion.sample(model, wav, steps=10)
    clip_frames = len(np.load(demo_work / "audio" / f"{wav.stem}.npy"))
    assert out["exp"].shape == (clip_frames, 52) and out["pose"].shape == (clip_frames, 6)
    assert out["exp"].dtype == np.float32 and np.isfinite(out["exp"]).all()
    short = motion.sample(
        model, np.load(demo_work / "audio" / f"{wav.stem}.npy")[:7].astype(np.float32), steps=10
    )
    assert short["exp"].shape == (7, 52)
    again = motion.sample(model, wav, steps=10)
    np.testing.assert_array_equal(out["exp"], again["exp"])  # a seed fixes the result
    with pytest.raises(UserError, match="missing.pt not found"):
        motion.load_motion(motion_run.parent / "missing.pt")


def test_load_refuses_a_lip_expert(lip_expert):
    for source in (lip_expert[0], lip_expert[0].parent):  # its checkpoint, its run directory
        with pytest.raises(UserError, match="holds no motion model .it has: lip_expert"):
            motion.load_motion(source, "cpu")


def test_joint_sampling_one_window_and_window_batches(motion_run, monkeypatch):
    """With one window, joint sampling is plain sampling (it equals the sequential way); with
    many, splitting the windows into network calls of another size changes nothing."""
    model = motion.load_motion(motion_run, "cpu")
    feats = np.random.default_rng(0).standard_normal((25, 80)).astype(np.float32)
    a = motion.sample(model, feats, steps=5, stitch="joint")
    b = motion.sample(model, feats, steps=5, stitch="inpaint")
    np.testing.assert_allclose(a["exp"], b["exp"], rtol=1e-5, atol=1e-5)
    long = np.random.default_rng(1).standard_normal((120, 80)).astype(np.float32)
    base = motion.sample(model, long, steps=5)
    monkeypatch.setattr(motion, "WINDOW_BATCH", 2)
    split = motion.sample(model, long, steps=5)
    for name in ("exp", "pose"):
        np.testing.assert_allclose(base[name], split[name], rtol=1e-4, atol=1e-5)
