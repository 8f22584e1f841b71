"""Train/val/test split by group (a speaker or a source video), never by clip (DESIGN.md
section 2: no identity leaks).

The unit (`split_by`): `speaker` groups every video of a speaker, so no person is in two
splits; `video` groups the rows of one source video (its `video_id`, which defaults to
the source file, so two spans of one file are one video); `auto` is `speaker` when every
manifest row has a `speaker_id`, else `video`. Under `speaker`, speakers who share a video
are one group (named by the smallest speaker id), so the video stays in one split.

Each group's split is a function of its id alone: a salted SHA-1 of the id maps it to u
in [0, 1), and u < 0.7 is train, u < 0.8 val, the rest test. So a group keeps its split
when the dataset grows or shrinks (a count-based cut would move groups between train and
test from one dataset version to the next). Only tiny datasets get help: with three or
more groups and a split left empty, the group whose u lies nearest to that split's range
moves into it (from a split with more than one).

A `split` given in the manifest pins its row's group. Rows of one group pinned to two
splits are a `PrepError` naming both rows, except under `auto`, which then falls back from
`speaker` to `video` (the pins say the manifest splits people across splits on purpose,
as the bundled demo does) and records why.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.sources.manifest import SPLITS

DEFAULT_RATIOS = (0.7, 0.1, 0.2)
SALT = "fd2talk-split-v1"
SPLIT_UNITS = ("auto", "speaker", "video")


def unit(group_id: str) -> float:
    """The group's fixed position in [0, 1)."""
    return int(hashlib.sha1(f"{SALT}:{group_id}".encode()).hexdigest()[:13], 16) / 16**13


def _ranges(ratios: tuple[float, float, float]) -> list[tuple[float, float]]:
    total = sum(ratios)
    cuts = [0.0, ratios[0] / total, (ratios[0] + ratios[1]) / total, 1.0]
    return [(cuts[i], cuts[i + 1]) for i in range(3)]


def assign_splits(
    group_ids: set[str] | list[str],
    pinned: dict[str, str] | None = None,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
) -> dict[str, str]:
    """group id -> split for every id; `pinned` ids keep their given split."""
    pinned = {v: s for v, s in (pinned or {}).items() if s}
    ranges = _ranges(ratios)
    out = dict(pinned)
    free = sorted(set(group_ids) - set(pinned))
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


@dataclass(frozen=True)
class SplitPlan:
    """Where every video goes, and by which unit."""

    split_by: str  # the unit used: "speaker" or "video"
    reason: str  # why this unit
    groups: dict[str, str]  # group id (speaker or video id) -> split
    videos: dict[str, str]  # video id -> split (its group's)

    def group_counts(self) -> dict[str, int]:
        """Groups per split (every split named, 0 when empty)."""
        c = Counter(self.groups.values())
        return {s: c[s] for s in SPLITS}


def _speaker_groups(rows: list[dict]) -> dict[str, str]:
    """video id -> group: the smallest speaker id among the speakers linked to it through
    shared videos (union-find over speakers and videos)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:  # ("s", speaker) sorts before ("v", video): a root is a speaker if any
        a, b = find(("s", r["speaker_id"])), find(("v", r["video_id"]))
        parent[max(a, b)] = min(a, b)
    return {r["video_id"]: find(("v", r["video_id"]))[1] for r in rows}


def _conflict(rows: list[dict], group_of: dict[str, str]) -> str | None:
    """A message if rows of one group are pinned to different splits, else None."""
    first: dict[str, dict] = {}
    for r in rows:
        if not r.get("split"):
            continue
        g = group_of[r["video_id"]]
        seen = first.setdefault(g, r)
        if seen["split"] != r["split"]:
            return (
                f"rows {seen['key']!r} (split {seen['split']}) and {r['key']!r} (split "
                f"{r['split']}) are pinned to different splits but share the group {g!r}"
            )
    return None


def plan_splits(
    rows: list[dict], split_by: str = "auto", ratios: tuple[float, float, float] = DEFAULT_RATIOS
) -> SplitPlan:
    """Split the videos of manifest `rows` (dicts with key, video_id, speaker_id, split)
    by `split_by` ("auto", "speaker" or "video"); raise `PrepError` on conflicting pins."""
    if split_by not in SPLIT_UNITS:
        raise PrepError(f"split_by {split_by!r} is not one of {SPLIT_UNITS}")
    missing = [r["key"] for r in rows if not r.get("speaker_id")]
    if split_by == "speaker" and missing:
        raise PrepError(
            f"split by speaker: {len(missing)} row(s) have no speaker_id (first: "
            f"{missing[0]!r}); give every row one, or split by video"
        )
    used, reason = split_by, f"split_by={split_by} was asked for"
    if split_by == "auto":
        used = "video" if missing else "speaker"
        reason = (
            f"auto: {len(missing)} of {len(rows)} rows have no speaker_id"
            if missing
            else "auto: every row has a speaker_id"
        )
    by_video = {r["video_id"]: r["video_id"] for r in rows}
    group_of = _speaker_groups(rows) if used == "speaker" else by_video
    problem = _conflict(rows, group_of)
    if problem and split_by == "auto" and used == "speaker":
        reason = f"auto: the manifest pins speakers to several splits ({problem})"
        used, group_of = "video", by_video
        problem = _conflict(rows, group_of)
    if problem:
        raise PrepError(f"split by {used}: {problem}")
    pinned = {group_of[r["video_id"]]: r["split"] for r in rows if r.get("split")}
    groups = assign_splits(set(group_of.values()), pinned, ratios)
    if used == "speaker":
        speakers: dict[str, set[str]] = {}
        for r in rows:
            speakers.setdefault(group_of[r["video_id"]], set()).add(r["speaker_id"])
        merged = ["+".join(sorted(s)) for g, s in sorted(speakers.items()) if len(s) > 1]
        if merged:
            reason += f"; speakers sharing a video are one group: {', '.join(merged)}"
    return SplitPlan(
        used,
        reason,
        dict(sorted(groups.items())),
        {v: groups[g] for v, g in sorted(group_of.items())},
    )
