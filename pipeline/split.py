"""Train/val/test split by video id, never by clip (DESIGN.md section 2: no identity leaks).

Each video's split is a function of its id alone: a salted SHA-1 of the id maps it
to u in [0, 1), and u < 0.7 is train, u < 0.8 val, the rest test. So a video keeps
its split when the dataset grows or shrinks (a count-based cut would move videos
between train and test from one dataset version to the next). Only tiny datasets
get help: with three or more videos and a split left empty, the video whose u lies
nearest to that split's range moves into it (from a split with more than one).
A `split` given in the manifest pins that video's split.
"""

from __future__ import annotations

import hashlib

from .manifest import SPLITS

DEFAULT_RATIOS = (0.7, 0.1, 0.2)
SALT = "fd2talk-split-v1"


def unit(video_id: str) -> float:
    """The video's fixed position in [0, 1)."""
    return int(hashlib.sha1(f"{SALT}:{video_id}".encode()).hexdigest()[:13], 16) / 16 ** 13


def _ranges(ratios: tuple[float, float, float]) -> list[tuple[float, float]]:
    total = sum(ratios)
    cuts = [0.0, ratios[0] / total, (ratios[0] + ratios[1]) / total, 1.0]
    return [(cuts[i], cuts[i + 1]) for i in range(3)]


def assign_splits(video_ids: set[str] | list[str], pinned: dict[str, str] | None = None,
                  ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> dict[str, str]:
    """video_id -> split for every id; `pinned` ids keep their given split."""
    pinned = {v: s for v, s in (pinned or {}).items() if s}
    ranges = _ranges(ratios)
    out = dict(pinned)
    free = sorted(set(video_ids) - set(pinned))
    for vid in free:
        u = unit(vid)
        out[vid] = next(s for s, (lo, hi) in zip(SPLITS, ranges, strict=True) if u < hi)
    if len(out) >= 3:
        for split, (lo, hi), ratio in zip(SPLITS, ranges, ratios, strict=True):
            if ratio <= 0 or split in out.values():
                continue
            counts = {s: sum(1 for v in out.values() if v == s) for s in SPLITS}
            movable = [v for v in free if counts[out[v]] > 1]
            if movable:
                nearest = min(movable, key=lambda v: (max(lo - unit(v), unit(v) - hi), v))
                out[nearest] = split
    return out
