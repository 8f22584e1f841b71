"""Splits are by speaker or video, deterministic, about 70/10/20, stable as a dataset grows."""

from collections import Counter

import pytest

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.stages.split import assign_splits, plan_splits


def test_proportions_and_determinism():
    vids = {f"video_{i}" for i in range(2000)}
    a = assign_splits(vids)
    assert a == assign_splits(sorted(vids, reverse=True))
    assert set(a) == vids
    c = Counter(a.values())
    assert abs(c["train"] / 2000 - 0.7) < 0.04
    assert abs(c["val"] / 2000 - 0.1) < 0.03
    assert abs(c["test"] / 2000 - 0.2) < 0.03


def test_a_video_keeps_its_split_when_the_dataset_grows():
    small = assign_splits({f"v{i}" for i in range(200)})
    large = assign_splits({f"v{i}" for i in range(1000)})
    assert all(large[v] == s for v, s in small.items())


def test_tiny_datasets_fill_every_split():
    for n in range(3, 12):
        a = assign_splits({f"clip{n}_{i}" for i in range(n)})
        assert set(a.values()) == {"train", "val", "test"}, (n, a)
    assert set(assign_splits({"only"}).values()) <= {"train", "val", "test"}


def test_pinned_splits_are_kept():
    a = assign_splits({"a", "b", "c", "d"}, pinned={"a": "test", "b": ""})
    assert a["a"] == "test"
    assert set(a) == {"a", "b", "c", "d"}


def _rows(speakers: int, videos: int, spans: int = 2) -> list[dict]:
    """Manifest rows: `spans` rows for each of `videos` videos of each of `speakers` people."""
    return [
        {
            "key": f"s{s}_v{v}_{k}",
            "video_id": f"s{s}/v{v}.mp4",
            "speaker_id": f"spk{s}",
            "split": "",
        }
        for s in range(speakers)
        for v in range(videos)
        for k in range(spans)
    ]


def _splits_of_speakers(rows: list[dict], videos: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["speaker_id"], set()).add(videos[r["video_id"]])
    return out


def test_by_speaker_no_person_is_in_two_splits():
    rows = _rows(speakers=30, videos=4)
    plan = plan_splits(rows)  # auto: every row has a speaker_id
    assert plan.split_by == "speaker" and "every row has a speaker_id" in plan.reason
    assert all(len(s) == 1 for s in _splits_of_speakers(rows, plan.videos).values())
    assert set(plan.groups) == {f"spk{s}" for s in range(30)}
    counts = plan.group_counts()
    assert counts == {s: list(plan.groups.values()).count(s) for s in ("train", "val", "test")}
    assert sum(counts.values()) == 30 and min(counts.values()) > 0
    again = plan_splits(list(reversed(rows)), "speaker")
    assert (again.split_by, again.groups, again.videos) == ("speaker", plan.groups, plan.videos)


def test_by_video_ignores_speakers():
    rows = _rows(speakers=30, videos=4)
    plan = plan_splits(rows, "video")
    assert plan.split_by == "video"
    assert plan.videos == plan.groups == assign_splits({r["video_id"] for r in rows})
    # the leak that splitting by speaker prevents: people in more than one split
    assert any(len(s) > 1 for s in _splits_of_speakers(rows, plan.videos).values())


def test_a_speakers_split_is_stable_when_the_dataset_grows():
    small = plan_splits(_rows(speakers=40, videos=2))
    large = plan_splits(_rows(speakers=300, videos=5))  # more people, more videos each
    assert all(large.groups[g] == s for g, s in small.groups.items())
    assert all(large.videos[v] == s for v, s in small.videos.items())


def test_auto_without_every_speaker_id_splits_by_video():
    rows = _rows(speakers=5, videos=2)
    rows[3] = {**rows[3], "speaker_id": ""}
    plan = plan_splits(rows)
    assert plan.split_by == "video" and "1 of 20 rows have no speaker_id" in plan.reason
    with pytest.raises(PrepError, match=r"no speaker_id \(first: 's0_v1_1'\)"):
        plan_splits(rows, "speaker")
    with pytest.raises(PrepError, match="is not one of"):
        plan_splits(rows, "person")


def test_pins_move_the_whole_group_and_conflicts_name_both_rows():
    rows = _rows(speakers=12, videos=3)
    free = plan_splits(rows)
    spk = next(g for g, s in free.groups.items() if s == "train")
    first = next(i for i, r in enumerate(rows) if r["speaker_id"] == spk)
    rows[first] = {**rows[first], "split": "test"}
    plan = plan_splits(rows)  # one pinned row takes its speaker's every video along
    assert plan.groups[spk] == "test"
    assert {plan.videos[r["video_id"]] for r in rows if r["speaker_id"] == spk} == {"test"}
    other = next(
        i
        for i, r in enumerate(rows)
        if r["speaker_id"] == spk and r["video_id"] != rows[first]["video_id"]
    )
    rows[other] = {**rows[other], "split": "val"}  # the same person pinned to two splits
    with pytest.raises(
        PrepError,
        match=rf"rows '{rows[first]['key']}' \(split test\) and "
        rf"'{rows[other]['key']}' \(split val\)",
    ):
        plan_splits(rows, "speaker")
    plan = plan_splits(rows)  # auto: the pins split people on purpose, so by video
    assert plan.split_by == "video" and "pins speakers to several splits" in plan.reason
    assert plan.videos[rows[first]["video_id"]] == "test"
    assert plan.videos[rows[other]["video_id"]] == "val"
    rows[first + 1] = {**rows[first + 1], "split": "train"}  # a span of the same video
    with pytest.raises(PrepError, match="split by video: rows"):
        plan_splits(rows)


def test_speakers_sharing_a_video_are_one_group():
    rows = _rows(speakers=10, videos=2, spans=1)
    rows.append(
        {"key": "interview", "video_id": "s3/v0.mp4", "speaker_id": "spk7", "split": ""}
    )  # spk3's video, where spk7 speaks too
    plan = plan_splits(rows)
    assert "spk3" in plan.groups and "spk7" not in plan.groups
    assert "spk3+spk7" in plan.reason
    assert (
        len({plan.videos[r["video_id"]] for r in rows if r["speaker_id"] in ("spk3", "spk7")}) == 1
    )
