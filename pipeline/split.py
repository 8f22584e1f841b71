"""Train/val/test split by video id, never by clip (DESIGN.md section 2: no identity leaks).

Deterministic: video ids are ordered by a salted SHA-1 and cut into 70/10/20
(largest-remainder rounding; with three or more videos every split gets at
least one). A `split` given in the manifest pins that video's split.
"""

from __future__ import annotations

import hashlib
import math

from .manifest import SPLITS

DEFAULT_RATIOS = (0.7, 0.1, 0.2)
SALT = "fd2talk-split-v1"


def split_counts(n: int, ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> list[int]:
    """How many of `n` videos go to train, val, test."""
    total = sum(ratios)
    exact = [n * r / total for r in ratios]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= 3:
        for i in (1, 2):
            if counts[i] == 0 and ratios[i] > 0:
                counts[i] = 1
                counts[0] -= 1
    return counts


def assign_splits(video_ids: set[str] | list[str], pinned: dict[str, str] | None = None,
                  ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> dict[str, str]:
    """video_id -> split for every id; `pinned` ids keep their given split."""
    pinned = {v: s for v, s in (pinned or {}).items() if s}
    free = sorted(set(video_ids) - set(pinned),
                  key=lambda v: hashlib.sha1(f"{SALT}:{v}".encode()).hexdigest())
    out = dict(pinned)
    start = 0
    for split, count in zip(SPLITS, split_counts(len(free), ratios), strict=True):
        for vid in free[start:start + count]:
            out[vid] = split
        start += count
    return out
