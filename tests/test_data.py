"""The training data stream on real pipeline shards: windows, determinism, resume, ranks, errors."""

import json

import numpy as np
import pytest
import torch
from conftest import npy, rewrite_shards

from fd2talk.model import data
from fd2talk.model.errors import UserError


@pytest.fixture(scope="module")
def shards(demo_work):
    return demo_work / "shards"


def _stream(shards, **kw):
    cfg = data.StreamConfig(**{"batch_size": 4, "epoch_batches": 6, "shuffle_buffer": 16, **kw})
    return data.split_shards(shards, "train"), cfg


def test_dataset_info_and_batches_have_the_schema_shapes(shards):
    info = data.dataset_info(shards)
    assert (info.coeffs, info.exp_dim, info.audio_features, info.audio_dim) == \
        ("mediapipe", 52, "logmel", 80)
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
        starts = [s for s in range(len(exp) - data.WINDOW + 1)
                  if np.array_equal(exp[s:s + data.WINDOW], b["exp"][i].numpy())]
        assert starts, key
        s = starts[0]
        np.testing.assert_array_equal(clips[key]["audio"][s:s + data.WINDOW], b["audio"][i].numpy())


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


def test_ranks_and_workers_get_different_deterministic_streams(shards):
    urls, cfg = _stream(shards)
    r0 = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0, rank=0, world=2))
    r1 = list(data.train_batches(urls, cfg, data.MOTION_FIELDS, seed=0, epoch=0, rank=1, world=2))
    assert not all(torch.equal(x["exp"], y["exp"]) for x, y in zip(r0, r1, strict=True))
    urls, cfg2 = _stream(shards, workers=2)
    w1 = list(data.train_batches(urls, cfg2, data.MOTION_FIELDS, seed=0, epoch=0))
    w2 = list(data.train_batches(urls, cfg2, data.MOTION_FIELDS, seed=0, epoch=0))
    assert len(w1) == cfg2.epoch_batches
    assert all(torch.equal(x["exp"], y["exp"]) for x, y in zip(w1, w2, strict=True))


def test_windows_respect_the_valid_mask():
    rng = __import__("random").Random(0)
    valid = np.ones(100, bool)
    valid[30:70] = False
    clip = {"key": "k", "exp": np.arange(100, dtype=np.float32)[:, None], "valid": valid,
            "id": np.zeros(3, np.float32)}
    for _ in range(20):
        for w in data.random_windows(clip, 25, rng, min_valid=0.8):
            assert w["valid"].mean() >= 0.8 and w["id"].shape == (3,)
    assert data.random_windows({**clip, "valid": np.zeros(100, bool)}, 25, rng) == []
    assert [w["start"] for w in data.fixed_windows(clip, 25)] == [0, 25, 50, 75]


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
