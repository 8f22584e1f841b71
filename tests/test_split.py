"""Splits are by video, deterministic, 70/10/20, and honour pinned splits."""

from collections import Counter

from fd2talk.pipeline.split import assign_splits, split_counts


def test_counts():
    assert split_counts(10) == [7, 1, 2]
    assert split_counts(3) == [1, 1, 1]
    assert split_counts(1) == [1, 0, 0] or sum(split_counts(1)) == 1
    assert split_counts(100) == [70, 10, 20]
    for n in range(0, 50):
        assert sum(split_counts(n)) == n


def test_assignment_is_deterministic_and_by_video():
    vids = {f"v{i}" for i in range(20)}
    a = assign_splits(vids)
    assert a == assign_splits(sorted(vids, reverse=True))
    assert set(a) == vids
    assert Counter(a.values()) == {"train": 14, "val": 2, "test": 4}


def test_pinned_splits_are_kept():
    a = assign_splits({"a", "b", "c", "d"}, pinned={"a": "test", "b": ""})
    assert a["a"] == "test"
    assert set(a) == {"a", "b", "c", "d"}
