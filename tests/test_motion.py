"""Stage-1 sampling from a checkpoint: any length, from an audio file, and windows stitched
without a jump at their boundaries."""

import numpy as np
import pytest

from fd2talk.model import data, motion
from fd2talk.model.errors import UserError


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


def _steps(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(x, axis=0), axis=1)  # (F - 1,) frame-to-frame change


def test_no_jump_at_window_boundaries(motion_run, demo_work):
    model = motion.load_motion(motion_run / "checkpoint.pt", "cpu")
    audio = np.concatenate([c["audio"] for c in data.iter_clips(demo_work / "shards", "test")])
    frames = len(audio)  # 300: 17 windows
    stitched = model.stats.normalize("exp", motion.sample(model, audio, seed=3)["exp"])
    naive = model.stats.normalize("exp", motion.sample(model, audio, seed=3, overlap=0)["exp"])
    starts = motion.window_starts(frames, data.WINDOW, motion.OVERLAP)
    seams = [a + data.WINDOW for a in starts[:-1]]  # first new frame of each next window
    steps = _steps(stitched)
    seam_steps = steps[np.array(seams) - 1]
    naive_seams = _steps(naive)[np.arange(data.WINDOW, frames, data.WINDOW) - 1]
    print(f"frame-to-frame change (normalised exp): median {np.median(steps):.3f}, at seams "
          f"{seam_steps.mean():.3f} stitched vs {naive_seams.mean():.3f} independent windows")
    assert seam_steps.mean() < 1.5 * np.median(steps)
    assert seam_steps.mean() < naive_seams.mean()
    assert stitched.shape == (frames, 52)


def test_sampling_from_an_audio_file_any_length(motion_run, demo_work):
    model = motion.load_motion(motion_run / "checkpoint.pt", "cpu")
    wav = sorted((demo_work / "crops").glob("*.wav"))[0]
    out = motion.sample(model, wav, steps=10)
    clip_frames = len(np.load(demo_work / "audio" / f"{wav.stem}.npy"))
    assert out["exp"].shape == (clip_frames, 52) and out["pose"].shape == (clip_frames, 6)
    assert out["exp"].dtype == np.float32 and np.isfinite(out["exp"]).all()
    short = motion.sample(model, np.load(demo_work / "audio" / f"{wav.stem}.npy")[:7]
                          .astype(np.float32), steps=10)
    assert short["exp"].shape == (7, 52)
    again = motion.sample(model, wav, steps=10)
    np.testing.assert_array_equal(out["exp"], again["exp"])  # a seed fixes the result
    with pytest.raises(UserError, match="missing.pt not found"):
        motion.load_motion(motion_run.parent / "missing.pt")


def test_load_refuses_a_lip_expert_checkpoint(lip_expert):
    with pytest.raises(UserError, match="'lipsync' checkpoint, not a motion"):
        motion.load_motion(lip_expert[0], "cpu")
