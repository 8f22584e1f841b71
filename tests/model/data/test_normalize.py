"""Coefficient/audio normalisation: statistics over valid frames only, floors, round trips."""

import numpy as np
import torch

from fd2talk.model.data.normalize import STD_FLOOR, Stats


def _clip(rng, frames, valid_every=1):
    valid = np.zeros(frames, bool)
    valid[::valid_every] = True
    return {
        "exp": rng.normal(2.0, 3.0, (frames, 4)).astype(np.float32),
        "pose": np.zeros((frames, 6), np.float32),  # never moves: std floored
        "audio": rng.normal(-5, 0.5, (frames, 3)).astype(np.float32),
        "valid": valid,
    }


def test_stats_use_valid_frames_only_and_floor_constant_dims():
    rng = np.random.default_rng(0)
    clips = [_clip(rng, 400), _clip(rng, 300, valid_every=3)]
    clips[1]["exp"][~clips[1]["valid"]] = 1e6  # invalid frames hold garbage: must not count
    stats = Stats.compute(clips)
    frames = np.concatenate([c["exp"][c["valid"]] for c in clips])
    np.testing.assert_allclose(stats.mean["exp"], frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std["exp"], frames.std(0), rtol=1e-4)
    assert stats.frames == 400 + 100
    assert np.all(stats.std["pose"] == np.float32(STD_FLOOR))
    assert stats.dim("audio") == 3


def test_normalize_round_trip_numpy_and_torch_and_state_dict():
    rng = np.random.default_rng(1)
    stats = Stats.compute([_clip(rng, 200)])
    x = rng.normal(0, 5, (2, 7, 4)).astype(np.float32)
    z = stats.normalize("exp", x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(stats.denormalize("exp", z), x, rtol=1e-5, atol=1e-5)
    zt = stats.normalize("exp", torch.from_numpy(x))
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-6)
    again = Stats.from_state_dict(stats.state_dict())
    np.testing.assert_array_equal(again.mean["audio"], stats.mean["audio"])
    np.testing.assert_array_equal(again.std["exp"], stats.std["exp"])
    # normalised training data has zero mean and unit std
    clip = _clip(np.random.default_rng(2), 5000)
    s = Stats.compute([clip])
    n = s.normalize("audio", clip["audio"])
    np.testing.assert_allclose(n.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(n.std(0), 1, atol=1e-3)
