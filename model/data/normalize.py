"""Per-dimension normalisation of coefficients and audio features.

The motion networks see `(x - mean) / std` for expression, pose and audio, with mean and std
computed once over the valid frames of the training split and stored in every checkpoint, so
sampling and later stages undo exactly the same map. Dimensions that never move in the data
(a blendshape that is always 0) get std = `STD_FLOOR`, so they are not blown up into noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

STD_FLOOR = 1e-3  # smallest std used for a dimension (in the data's own units)
STREAMS = ("exp", "pose", "audio")  # the per-frame arrays that get normalised


@dataclass
class _Moments:
    """Running sums in float64 over frames: count, sum, sum of squares."""

    n: int = 0
    s: np.ndarray | None = None
    ss: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:  # x: (F, D) valid frames only
        x = x.astype(np.float64)
        self.n += len(x)
        self.s = x.sum(0) if self.s is None else self.s + x.sum(0)
        self.ss = (x * x).sum(0) if self.ss is None else self.ss + (x * x).sum(0)


@dataclass
class Stats:
    """mean/std per stream (each (D,) float32); `frames` is how many frames they come from."""

    mean: dict[str, np.ndarray] = field(default_factory=dict)
    std: dict[str, np.ndarray] = field(default_factory=dict)
    frames: int = 0

    @classmethod
    def compute(cls, clips: Iterable[dict], streams: tuple[str, ...] = STREAMS) -> Stats:
        """Accumulate over clips (dicts of numpy arrays with `valid` (F,) and each stream (F, D))."""
        moments = {k: _Moments() for k in streams}
        for clip in clips:
            valid = clip["valid"].astype(bool)
            for k in streams:
                moments[k].add(np.asarray(clip[k])[valid])
        stats = cls()
        for k, m in moments.items():
            if m.n == 0:
                raise ValueError("no valid frames to compute normalisation statistics from")
            mean = m.s / m.n
            var = np.maximum(m.ss / m.n - mean * mean, 0.0)
            stats.mean[k] = mean.astype(np.float32)
            stats.std[k] = np.maximum(np.sqrt(var), STD_FLOOR).astype(np.float32)
            stats.frames = m.n
        return stats

    def dim(self, stream: str) -> int:
        return int(self.mean[stream].shape[0])

    def normalize(self, stream: str, x):
        """x: (..., D) numpy array or torch tensor -> same type, normalised."""
        mean, std = self._pair(stream, x)
        return (x - mean) / std

    def denormalize(self, stream: str, x):
        mean, std = self._pair(stream, x)
        return x * std + mean

    def _pair(self, stream: str, x):
        mean, std = self.mean[stream], self.std[stream]
        if isinstance(x, np.ndarray):
            return mean.astype(x.dtype), std.astype(x.dtype)
        import torch

        return (
            torch.as_tensor(mean, dtype=x.dtype, device=x.device),
            torch.as_tensor(std, dtype=x.dtype, device=x.device),
        )

    def state_dict(self) -> dict:
        """Plain lists, so the checkpoint loads with `torch.load(weights_only=True)`."""
        return {
            "mean": {k: v.tolist() for k, v in self.mean.items()},
            "std": {k: v.tolist() for k, v in self.std.items()},
            "frames": self.frames,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Stats:
        return cls(
            {k: np.asarray(v, np.float32) for k, v in state["mean"].items()},
            {k: np.asarray(v, np.float32) for k, v in state["std"].items()},
            int(state["frames"]),
        )
