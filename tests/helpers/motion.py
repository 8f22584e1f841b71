"""Stage-1 predictions against the speech (tests and bench/learning_spread.py)."""

from __future__ import annotations

import numpy as np

from fd2talk.core import media
from fd2talk.model.data import loader as data
from fd2talk.model.generation import motion
from fd2talk.pipeline.backends.landmarker import JAW_OPEN


def envelope(work, key: str) -> np.ndarray:
    """RMS of the crop's speech per 40 ms video frame."""
    s = media.read_audio(work / "crops" / f"{key}.wav", 60)
    n = len(s) // 640
    return np.sqrt((s[: n * 640].reshape(n, 640) ** 2).mean(1))


def jaw_vs_speech(checkpoint, work) -> list[float]:
    """Pearson r(sampled jawOpen, speech envelope) per test clip and seed; a constant
    prediction (an untrained, zero-initialised output layer) counts as r = 0."""
    model = motion.load_motion(checkpoint, "cpu")
    rs = []
    for clip in data.iter_clips(work / "shards", "test"):
        env = envelope(work, clip["key"])
        n = min(len(env), len(clip["audio"]))
        for seed in (0, 1):
            jaw = motion.sample(model, clip["audio"], seed=seed)["exp"][:n, JAW_OPEN]
            rs.append(0.0 if jaw.std() < 1e-6 else float(np.corrcoef(jaw, env[:n])[0, 1]))
    return rs
