"""Stage `shard`: samples round-trip through webdataset, split by video, stats and manifest."""

import json
import math

import numpy as np
import pytest
import webdataset as wds
from helpers import ffmpeg_video

from fd2talk.core import atomic, schema
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.sources.manifest import read_manifest
from fd2talk.pipeline.stages.shard import ShardConfig, describe, run_shard
from fd2talk.pipeline.stages.split import assign_splits

F = 30  # frames per test clip


def _make_clip(work, key, video_id, frames=F, audio_frames=None, seed=0, speaker=""):
    """Write the files the crop, coeffs and audio stages leave for one clip."""
    rng = np.random.default_rng(seed)
    (work / "crops").mkdir(parents=True, exist_ok=True)
    ffmpeg_video(work / "crops" / f"{key}.mp4", seconds=frames / schema.FPS, size="256x256")
    valid = np.ones(frames, bool)
    valid[3] = False
    exp = rng.normal(size=(frames, 52)).astype(np.float32)
    exp[~valid] = 0
    atomic.write_npz(
        work / "coeffs" / f"{key}.npz",
        exp=exp,
        pose=rng.normal(size=(frames, 6)).astype(np.float32),
        id=rng.normal(size=1434).astype(np.float32),
        lm=rng.uniform(0, 256, (frames, 478, 2)).astype(np.float32),
        lm3d=rng.normal(size=(frames, 478, 3)).astype(np.float16),
        valid=valid,
    )
    atomic.write_npy(
        work / "audio" / f"{key}.npy",
        rng.normal(size=(audio_frames or frames, 80)).astype(np.float16),
    )
    atomic.write_json(
        work / "crops" / f"{key}.json",
        {
            "key": key,
            "clip": key.rsplit("_t", 1)[0],
            "frames": frames,
            "fps": 25,
            "video_id": video_id,
            "speaker_id": speaker,
            "split": "",
            "box": [0, 0, 100, 100],
            "detector": "mediapipe",
            "source": f"/data/{video_id}.mp4",
            "start": 0.0,
        },
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("shardwork")
    for v in range(10):  # 10 videos, two clips each
        for c in range(2):
            _make_clip(work, f"vid{v}_f00{c}_t0", f"vid{v}", seed=v * 10 + c)
    _make_clip(work, "bad_f000_t0", "vid0", audio_frames=F - 2)  # disagrees with the crop
    _make_clip(work, "gone_f000_t0", "vid1")
    (work / "coeffs" / "gone_f000_t0.npz").unlink()  # as if coeffs skipped it
    atomic.write_json(
        work / "status" / "coeffs" / "gone_f000_t0.json",
        {
            "key": "gone_f000_t0",
            "status": "skipped",
            "reason": "too_many_invalid_frames",
            "detail": "20 of 30 frames have no face",
        },
    )
    run_shard(work, ShardConfig(maxcount=4), progress=False)
    return work


def _read_all(work):
    urls = sorted(str(p) for p in (work / "shards").glob("*.tar"))
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    return {s["__key__"]: s for s in ds}


def test_round_trip_and_schema(work):
    samples = _read_all(work)
    assert len(samples) == 20
    s = samples["vid3_f001_t0"]
    assert schema.validate_sample(s) == F
    with np.load(work / "coeffs" / "vid3_f001_t0.npz") as npz:
        np.testing.assert_array_equal(s["exp.npy"], npz["exp"])
        np.testing.assert_array_equal(s["valid.npy"], npz["valid"])
    np.testing.assert_array_equal(s["audio.npy"], np.load(work / "audio" / "vid3_f001_t0.npy"))
    assert s["mp4"] == (work / "crops" / "vid3_f001_t0.mp4").read_bytes()
    assert s["json"]["video_id"] == "vid3" and s["json"]["frames"] == F
    assert s["json"]["split"] in ("train", "val", "test")


def test_split_by_video_and_shard_names(work):
    rows = [
        json.loads(line) for line in (work / "shards" / "manifest.jsonl").read_text().splitlines()
    ]
    header, rows = rows[0], rows[1:]
    # (the split of 10 videos is split.py's to test; here: every clip counted where it went)
    assert header["counts"] == {
        sp: sum(1 for r in rows if r["shard"] and r["split"] == sp)
        for sp in ("train", "val", "test")
    }
    assert sum(header["counts"].values()) == 20 and min(header["counts"].values()) > 0
    split_of = {}
    for r in rows:
        if r["shard"]:
            assert r["shard"].startswith(r["split"] + "-")
            assert split_of.setdefault(r["video_id"], r["split"]) == r["split"]
    names = sorted(p.name for p in (work / "shards").glob("*.tar"))
    for sp, n in header["counts"].items():  # at most 4 a shard
        assert [x for x in names if x.startswith(sp)] == [
            f"{sp}-{k:06d}.tar" for k in range(math.ceil(n / 4))
        ]
    assert json.loads((work / "shards" / "splits.json").read_text()) == {
        f"vid{v}": split_of[f"vid{v}"] for v in range(10)
    }


def test_skips_and_stats(work):
    rows = {
        json.loads(line)["key"]: json.loads(line)
        for line in (work / "shards" / "manifest.jsonl").read_text().splitlines()[1:]
    }
    assert rows["bad_f000_t0"]["reason"] == "inconsistent_inputs"
    assert "28 frames" in rows["bad_f000_t0"]["detail"] or "28" in rows["bad_f000_t0"]["detail"]
    assert rows["gone_f000_t0"]["reason"] == "incomplete_inputs"
    assert "too_many_invalid_frames" in rows["gone_f000_t0"]["detail"]
    stats = json.loads((work / "shards" / "train-000000.stats.json").read_text())
    assert stats["samples"] == 4 and stats["frames"] == 4 * F
    assert stats["valid_frames"] == 4 * (F - 1)
    assert stats["skipped_total"] == {"inconsistent_inputs": 1, "incomplete_inputs": 1}
    assert stats["config"]["maxcount"] == 4 and stats["git_revision"]
    assert stats["split_by"] == "video" and sum(stats["groups_per_split"].values()) == 10
    failures = (work / "status" / "shard" / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 2


def test_rerun_is_noop_and_changes_rebuild(work, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in (work / "shards").iterdir()}
    summary = run_shard(work, ShardConfig(maxcount=4), progress=False)
    assert summary.already == 22 and summary.done == 0
    assert {p.name: p.stat().st_mtime_ns for p in (work / "shards").iterdir()} == before
    tars = {p.name: p.read_bytes() for p in (work / "shards").glob("*.tar")}
    summary = run_shard(work, ShardConfig(maxcount=4), progress=False, force=True)
    assert summary.done == 20
    # deterministic: a rebuild writes the same bytes
    assert {p.name: p.read_bytes() for p in (work / "shards").glob("*.tar")} == tars
    with pytest.raises(PrepError, match="no crops"):
        run_shard(tmp_path, ShardConfig(), progress=False)


def test_upstream_changes_rebuild_and_bad_arrays_are_skips(tmp_path):
    """A changed crop json or upstream stage config rebuilds the shards; audio features of the
    wrong shape or an unreadable npz are skips with a reason, not a traceback."""
    work = tmp_path / "w"
    _make_clip(work, "a_f000_t0", "a")
    _make_clip(work, "b_f000_t0", "b", seed=1)
    _make_clip(work, "c_f000_t0", "c", seed=2)
    atomic.write_npy(work / "audio" / "b_f000_t0.npy", np.zeros(F, np.float16))  # (F,), no D
    (work / "coeffs" / "c_f000_t0.npz").write_bytes(b"PK\x03\x04 not a zip")
    summary = run_shard(work, ShardConfig(), progress=False)
    assert summary.done == 1
    assert dict(summary.skipped) == {"inconsistent_inputs": 1, "decode_error": 1}
    assert run_shard(work, ShardConfig(), progress=False).already == 3
    meta = json.loads((work / "crops" / "a_f000_t0.json").read_text())
    atomic.write_json(work / "crops" / "a_f000_t0.json", {**meta, "box": [1, 1, 99, 99]})
    assert run_shard(work, ShardConfig(), progress=False).done == 1
    assert _read_all(work)["a_f000_t0"]["json"]["box"] == [1, 1, 99, 99]
    atomic.write_json(work / "status" / "audio" / "config.json", {"backend": "wav2vec2"})
    assert run_shard(work, ShardConfig(), progress=False).done == 1
    assert _read_all(work)["a_f000_t0"]["json"]["audio_features"] == "wav2vec2"


def _shard_manifest(work):
    lines = [json.loads(x) for x in (work / "shards" / "manifest.jsonl").read_text().splitlines()]
    return lines[0], {r["key"]: r for r in lines[1:]}


def test_two_spans_of_one_file_land_in_one_split(tmp_path):
    """Rows cutting spans from one file (no video_id given) are one video, whatever their
    keys would hash to (talk_a and talk_b alone would go to different splits)."""
    keys = ["talk_a", "talk_b", "x0", "x1", "x2"]
    assert len({assign_splits(keys)[k] for k in ("talk_a", "talk_b")}) == 2
    src = tmp_path / "src"
    src.mkdir()
    for name in ("talk", "x0", "x1", "x2"):
        (src / f"{name}.mp4").write_bytes(b"x")
    (src / "m.csv").write_text(
        "key,path,start,end\ntalk_a,talk.mp4,0,30\n"
        "talk_b,talk.mp4,30,60\nx0,x0.mp4,,\nx1,x1.mp4,,\nx2,x2.mp4,,\n"
    )
    work = tmp_path / "w"
    for i, row in enumerate(read_manifest(src / "m.csv")):  # what the clip stage records
        atomic.write_json(
            work / "status" / "clip" / f"{row.key}.json",
            {"key": row.key, "stage": "clip", "inputs": row.to_dict(), "status": "done"},
        )
        _make_clip(work, f"{row.key}_f000_t0", row.video_id, seed=i)
    run_shard(work, ShardConfig(), progress=False)
    header, rows = _shard_manifest(work)
    assert rows["talk_a_f000_t0"]["video_id"] == rows["talk_b_f000_t0"]["video_id"] == "talk.mp4"
    assert rows["talk_a_f000_t0"]["split"] == rows["talk_b_f000_t0"]["split"]
    assert header["split_by"] == "video" and sum(header["groups_per_split"].values()) == 4


def test_split_by_speaker_then_video_reshards_and_says_which(tmp_path):
    """With a speaker id on every clip, auto splits by speaker (no person in two splits);
    asking for video splits reshards; the header and each stats file name the unit."""
    work = tmp_path / "w"
    for s in range(6):
        for v in range(2):
            _make_clip(
                work, f"s{s}v{v}_f000_t0", f"s{s}/v{v}.mp4", seed=10 * s + v, speaker=f"spk{s}"
            )
    run_shard(work, ShardConfig(), progress=False)
    header, rows = _shard_manifest(work)
    assert header["split_by"] == "speaker"
    assert "every row has a speaker_id" in header["split_by_reason"]
    assert sum(header["groups_per_split"].values()) == 6
    for s in range(6):
        assert rows[f"s{s}v0_f000_t0"]["split"] == rows[f"s{s}v1_f000_t0"]["split"]
    for path in (work / "shards").glob("*.stats.json"):
        stats = json.loads(path.read_text())
        assert stats["split_by"] == "speaker" and stats["config"]["split_by"] == "auto"
        assert stats["groups_per_split"] == header["groups_per_split"]
    assert "split by speaker" in describe(work)
    assert run_shard(work, ShardConfig(split_by="speaker"), progress=False).done == 12
    summary = run_shard(work, ShardConfig(split_by="video"), progress=False)
    assert summary.done == 12 and summary.already == 0  # another unit: resharded
    header, rows = _shard_manifest(work)
    assert header["split_by"] == "video" and sum(header["groups_per_split"].values()) == 12
    assert json.loads((work / "shards" / "splits.json").read_text()) == assign_splits(
        {f"s{s}/v{v}.mp4" for s in range(6) for v in range(2)}
    )


def test_cli_split_by_reaches_the_shard_config(tmp_path, monkeypatch):
    """`fd2talk-prep shard` and `run` take --split-by auto|speaker|video into ShardConfig;
    other values are a usage error."""
    from typer.testing import CliRunner

    from fd2talk.cli.prep import app
    from fd2talk.cli.prep_options import SplitBy
    from fd2talk.pipeline.runner.summary import Summary
    from fd2talk.pipeline.stages import chain as run
    from fd2talk.pipeline.stages import shard
    from fd2talk.pipeline.stages.split import SPLIT_UNITS

    assert tuple(SplitBy) == SPLIT_UNITS
    seen = []
    monkeypatch.setattr(
        shard, "run_shard", lambda work, cfg, **kw: (seen.append(cfg.split_by), Summary("shard"))[1]
    )
    monkeypatch.setattr(
        run, "run_all", lambda work, cfg, **kw: (seen.append(cfg.shard.split_by), [])[1]
    )
    runner = CliRunner()
    shard_args = ["shard", str(tmp_path), "-q"]
    run_args = ["run", str(tmp_path), "-m", str(tmp_path / "m.csv"), "-q"]
    for args in (
        shard_args,
        [*shard_args, "--split-by", "video"],
        [*run_args, "--split-by", "speaker"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert seen == ["auto", "video", "speaker"]
    result = runner.invoke(app, ["shard", str(tmp_path), "--split-by", "person"])
    assert result.exit_code == 2 and "person" in result.output
