"""Splits are by video, deterministic, about 70/10/20, stable as a dataset grows."""

from collections import Counter

from fd2talk.pipeline.split import assign_splits


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
