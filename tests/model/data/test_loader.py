"""The training data stream on real pipeline shards: windows, determinism, resume, ranks, errors."""

import json

import numpy as np
import pytest
import torch
from helpers import npy, rewrite_shards

from fd2talk.core.errors import UserError
from fd2talk.model.data import folds as folding
from fd2talk.model.data import loader as data
from fd2talk.model.data import windows


@pytest.fixture(scope="module")
def shards(demo_work):
    return demo_work / "shards"


def _stream(shards, **kw):
    cfg = data.StreamConfig(**{"batch_size": 4, "epoch_batches": 6, "shuffle_buffer": 16, **kw})
    return data.split_shards(shards, "train"), cfg


def test_dataset_info_and_batches_have_the_schema_shapes(shards):
    info = data.dataset_info(shards)
    assert (info.coeffs, info.exp_dim, info.audio_features, info.audio_dim) == (
        "mediapipe",
        52,
        "logmel",
        80,
    )
    urls, cfg = _stream(shards)
    batches = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0))
    assert len(batches) == cfg.epoch_batches
    b = batches[0]
    assert b["exp"].shape == (4, data.WINDOW, 52) and b["exp"].dtype == torch.float32
    assert b["pose"].shape == (4, data.WINDOW, 6)
    assert b["audio"].shape == (4, data.WINDOW, 80) and b["audio"].dtype == torch.float32
    assert b["valid"].shape == (4, data.WINDOW) and b["valid"].dtype == torch.bool
    assert b["id"].shape == (4, 1434)
    # a window is a real slice of its clip: find it in the clip's arrays
    clips = {c["key"]: c for c in data.iter_clips(shards, "train")}
    for i, key in enumerate(b["key"]):
        exp = clips[key]["exp"]
        starts = [
            s
            for s in range(len(exp) - data.WINDOW + 1)
            if np.array_equal(exp[s : s + data.WINDOW], b["exp"][i].numpy())
        ]
        assert starts, key
        s = starts[0]
        np.testing.assert_array_equal(
            clips[key]["audio"][s : s + data.WINDOW], b["audio"][i].numpy()
        )


def test_stream_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch(shards):
    urls, cfg = _stream(shards)
    a = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0))
    b = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0))
    c = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=1))
    assert all(torch.equal(x["exp"], y["exp"]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x["exp"], y["exp"]) for x, y in zip(a, c, strict=True))
    # the stream from step 9 equals steps 9.. of the stream from step 0 (epochs of 6 batches)
    whole = data.batches_from(urls, cfg, data.MOTION_FIELDS, seed=0, step=0)
    head = [next(whole) for _ in range(14)]
    tail = data.batches_from(urls, cfg, data.MOTION_FIELDS, seed=0, step=9)
    for want in head[9:]:
        assert torch.equal(next(tail)["exp"], want["exp"])


def _one_clip_per_tar(src, dst):
    """A copy of a shard folder whose train split has one clip per tar (7 tars)."""
    import webdataset as wds

    dst.mkdir()
    names = []
    for path in data.split_shards(src, "train"):
        for sample in wds.WebDataset(path, shardshuffle=False, empty_check=False):
            name = f"train-{len(names):06d}.tar"
            with wds.TarWriter(str(dst / name)) as out:
                out.write({k: v for k, v in sample.items() if k != "__url__"})
            names.append(name)
    lines = (src / data.MANIFEST).read_text().splitlines()
    header = json.loads(lines[0])
    header["shards"] = names + [n for n in header["shards"] if not n.startswith("train-")]
    for name in header["shards"][len(names) :]:
        (dst / name).write_bytes((src / name).read_bytes())
    (dst / data.MANIFEST).write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    return dst


def _keys(batches) -> set[str]:
    return {k for b in batches for k in b["key"]}


def test_ranks_and_workers_read_different_shards_deterministically(shards, tmp_path):
    """With at least as many shards as (ranks x workers), each reads only its own slice of
    the shards: the clips two ranks (or two DataLoader workers) read are disjoint; and each
    stream is the same every time."""
    many = _one_clip_per_tar(shards, tmp_path / "many")
    urls, cfg = _stream(many)
    assert len(urls) == 7
    r0 = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0, rank=0, world=2))
    r1 = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0, rank=1, world=2))
    assert _keys(r0) and _keys(r1) and not _keys(r0) & _keys(r1)
    again = list(
        data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0, rank=1, world=2)
    )
    assert all(torch.equal(x["exp"], y["exp"]) for x, y in zip(r1, again, strict=True))
    urls, cfg2 = _stream(many, workers=2, epoch_batches=8)
    w1 = list(data.train_batches(urls, cfg2, data.MOTION_FIELDS, seed=0, epoch=0))
    w2 = list(data.train_batches(urls, cfg2, data.MOTION_FIELDS, seed=0, epoch=0))
    assert len(w1) == cfg2.epoch_batches
    assert all(torch.equal(x["exp"], y["exp"]) for x, y in zip(w1, w2, strict=True))
    # the DataLoader takes batches from its workers in turn: worker 0's and worker 1's clips
    even, odd = _keys(w1[0::2]), _keys(w1[1::2])
    assert even and odd and not even & odd
    # with fewer shards than readers, every reader draws from all of them with its own seed
    urls, cfg = _stream(shards)
    few = [
        list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0, rank=r, world=2))
        for r in (0, 1)
    ]
    assert not all(torch.equal(x["exp"], y["exp"]) for x, y in zip(*few, strict=True))


def test_windows_respect_the_valid_mask():
    rng = __import__("random").Random(0)
    valid = np.ones(100, bool)
    valid[30:70] = False
    clip = {
        "key": "k",
        "exp": np.arange(100, dtype=np.float32)[:, None],
        "valid": valid,
        "id": np.zeros(3, np.float32),
    }
    for _ in range(20):
        for w in windows.random_windows(clip, 25, rng, min_valid=0.8):
            assert w["valid"].mean() >= 0.8 and w["id"].shape == (3,)
    assert windows.random_windows({**clip, "valid": np.zeros(100, bool)}, 25, rng) == []
    assert [w["start"] for w in windows.fixed_windows(clip, 25)] == [0, 25, 50, 75]


def test_bad_inputs_are_clear_errors(shards, tmp_path):
    with pytest.raises(UserError, match="manifest.jsonl not found"):
        data.split_shards(tmp_path, "train")
    with pytest.raises(UserError, match="split 'nope' has no clips.*train: 7"):
        data.split_shards(shards, "nope")

    def drop_exp(sample):
        sample["exp.npy"] = None

    bad = rewrite_shards(shards, tmp_path / "noexp", drop_exp)
    with pytest.raises(UserError, match="has no 'exp.npy'.*fd2talk-prep"):
        data.dataset_info(bad)
    urls, cfg = _stream(bad)
    with pytest.raises(UserError, match="has no 'exp.npy'"):
        next(iter(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0)))

    def old_json(sample):
        meta = json.loads(sample["json"])
        del meta["exp_dim"]
        sample["json"] = json.dumps(meta).encode()

    with pytest.raises(UserError, match="no 'exp_dim' in its json"):
        data.dataset_info(rewrite_shards(shards, tmp_path / "nodim", old_json))
    assert npy(np.zeros(2)).startswith(b"\x93NUMPY")


def test_folds_split_the_training_clips_and_a_held_out_fold_never_reaches_a_batch(shards):
    keys = sorted(c["key"] for c in data.iter_clips(shards, "train", ("valid", "audio")))
    folds = [folding.fold_keys(shards, k, 2) for k in range(2)]
    assert sorted(folds[0] + folds[1]) == keys and not set(folds[0]) & set(folds[1])
    assert folds[0] == keys[0::2] and folding.parse_fold("1/2") == (1, 2)
    urls, cfg = _stream(shards, epoch_batches=12)
    held = windows.HoldOut(windows.RandomWindows(cfg.window, cfg.min_valid), folds[0])
    seen = {
        k
        for b in data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0, make_items=held)
        for k in b["key"]
    }
    assert seen and seen <= set(folds[1])
    for bad in ("2/2", "1", "a/b", "0/1"):
        with pytest.raises(UserError, match="--fold"):
            folding.parse_fold(bad)
    with pytest.raises(UserError, match="fewer than folds"):
        folding.fold_keys(shards, 0, len(keys) + 1)
