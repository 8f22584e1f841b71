"""Windows of a decoded clip: random ones for training (each with enough valid frames),
consecutive ones for validation, the item makers the training stream takes, and `collate`
(windows -> a batch of tensors)."""

from __future__ import annotations

import random

import numpy as np


def _slice(clip: dict, start: int, window: int, per_frame: tuple[str, ...]) -> dict:
    out = {k: clip[k][start : start + window] for k in per_frame}
    for k, v in clip.items():
        if k not in out and isinstance(v, np.ndarray):
            out[k] = v  # per-clip arrays (id) ride along
    out["key"], out["start"] = clip["key"], start
    return out


def _per_frame(clip: dict) -> tuple[str, ...]:
    n = len(clip["valid"])
    return tuple(
        k
        for k, v in clip.items()
        if isinstance(v, np.ndarray) and k != "id" and v.ndim >= 1 and len(v) == n
    )


def random_windows(
    clip: dict, window: int, rng: random.Random, min_valid: float = 0.8
) -> list[dict]:
    """About F // window random windows of one clip, each with >= min_valid valid frames."""
    n = len(clip["valid"])
    if n < window:
        return []
    per_frame = _per_frame(clip)
    valid = clip["valid"].astype(np.float32)
    frac = np.convolve(valid, np.ones(window, np.float32), "valid") / window  # (n - window + 1,)
    starts = np.flatnonzero(frac >= min_valid)
    if len(starts) == 0:
        return []
    picks = [int(starts[rng.randrange(len(starts))]) for _ in range(max(1, n // window))]
    return [_slice(clip, s, window, per_frame) for s in picks]


def fixed_windows(clip: dict, window: int) -> list[dict]:
    """Consecutive non-overlapping windows (validation): deterministic, no randomness."""
    per_frame = _per_frame(clip)
    n = len(clip["valid"])
    return [
        _slice(clip, s, window, per_frame)
        for s in range(0, n - window + 1, window)
        if clip["valid"][s : s + window].any()
    ]


def collate(windows: list[dict]) -> dict:
    """List of windows -> dict of torch tensors stacked on a new batch axis (N, ...)."""
    import torch

    out = {}
    for k, v in windows[0].items():
        if isinstance(v, np.ndarray):
            out[k] = torch.from_numpy(np.stack([w[k] for w in windows]))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            out[k] = torch.tensor([int(w[k]) for w in windows])  # (N,) e.g. frame indices
        elif isinstance(v, bool):
            out[k] = torch.tensor([bool(w[k]) for w in windows])  # (N,) e.g. has speech
    out["key"] = [w["key"] for w in windows]
    return out


class HoldOut:
    """An item maker that makes no items from the clips in `keys` (picklable)."""

    def __init__(self, make_items, keys):
        self.make_items, self.keys = make_items, frozenset(keys)

    def __call__(self, clip: dict, rng: random.Random) -> list[dict]:
        return [] if clip["key"] in self.keys else self.make_items(clip, rng)


class RandomWindows:
    """The stage-1 item maker: random windows of one decoded clip (picklable)."""

    def __init__(self, window: int, min_valid: float):
        self.window, self.min_valid = window, min_valid

    def __call__(self, clip: dict, rng: random.Random) -> list[dict]:
        return random_windows(clip, self.window, rng, self.min_valid)
