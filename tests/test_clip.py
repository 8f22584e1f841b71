"""Stage `clip`: any input format -> 25 fps CFR clips with 16 kHz mono audio; bad input -> skips."""

import json
import subprocess

import pytest
from conftest import SHARED_CLIPS, ffmpeg_video
from typer.testing import CliRunner

from fd2talk.pipeline import media
from fd2talk.pipeline.cli import app
from fd2talk.pipeline.clip import KEYINT, ClipConfig, ClipStage, fragments
from fd2talk.pipeline.runner import run_stage


def _manifest(tmp_path, rows):
    path = tmp_path / "manifest.csv"
    lines = ["key,path,start,end,video_id"] + [
        f"{k},{p},{s if s is not None else ''},{e if e is not None else ''},{k}"
        for k, p, s, e in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tmp_path, rows, **cfg):
    work = tmp_path / "work"
    stage = ClipStage(ClipConfig(manifest=str(_manifest(tmp_path, rows)), **cfg))
    return work, run_stage(stage, work, progress=False)


def _keyframes(mp4):
    """Frame numbers of the video packets flagged as keyframes (demuxing only)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time,flags", "-of", "csv=p=0", str(mp4)],
                         capture_output=True, check=True, text=True).stdout
    rows = [line.split(",") for line in out.split()]
    return sorted(round(float(t) * 25) for t, flags in rows if "K" in flags)


def _check_clip(work, key, frames):
    mp4 = work / "clips" / f"{key}.mp4"
    info = media.probe(mp4)
    assert (info.fps, info.sample_rate, info.channels) == (25.0, 16000, 1)
    assert media.count_frames(mp4) == frames
    assert abs(info.audio_duration - frames / 25) <= 0.065  # AAC frames are 64 ms
    meta = json.loads(mp4.with_suffix(".json").read_text())
    assert meta["frames"] == frames and meta["fps"] == 25
    assert (meta["width"], meta["height"]) == (info.width, info.height)
    # A keyframe every KEYINT frames and on the last one, as the json says (crop relies on it).
    assert meta["keyint"] == KEYINT == 5 and meta["last_keyframe"] is True
    assert _keyframes(mp4) == sorted(set(range(0, frames, KEYINT)) | {frames - 1})


def test_fragments_cover_the_span_evenly():
    assert fragments(100, 750) == [(0, 100)]
    parts = fragments(2000, 750)
    assert len(parts) == 3 and parts[0][0] == 0 and parts[-1][1] == 2000
    assert all(b - a <= 750 for a, b in parts)
    assert all(parts[i][1] == parts[i + 1][0] for i in range(len(parts) - 1))


@pytest.mark.parametrize("fps, sr, channels, vcodec, ext, size", [
    (24, 44100, 2, "libx264", "mp4", "320x240"),
    (30000 / 1001, 16000, 1, "mpeg4", "mkv", "320x240"),
    (30, 48000, 2, "mpeg4", "avi", "321x241"),  # odd sides: x264's 4:2:0 needs even ones
    (25, 22050, 1, "libx264", "mov", "320x240"),
])
def test_formats_are_normalised(tmp_path, fps, sr, channels, vcodec, ext, size):
    src = ffmpeg_video(tmp_path / f"src.{ext}", seconds=2.0, fps=fps, sample_rate=sr,
                       channels=channels, vcodec=vcodec, size=size)
    work, summary = _run(tmp_path, [("v", src, None, None)])
    assert summary.done == 1 and summary.ok, summary.failures
    _check_clip(work, "v_f000", 50)
    meta = json.loads((work / "clips" / "v_f000.json").read_text())
    assert (meta["width"], meta["height"]) == (320, 240)


def test_start_end_and_long_sources_split(tmp_path):
    src = ffmpeg_video(tmp_path / "long.mp4", seconds=6.0)
    work, summary = _run(tmp_path, [("whole", src, None, None), ("span", src, 1.0, 3.5)],
                         max_seconds=2.5)
    assert summary.done == 2
    # 6 s at <= 2.5 s per fragment: 3 fragments of 50 frames
    for k in range(3):
        _check_clip(work, f"whole_f{k:03d}", 50)
    assert not (work / "clips" / "whole_f003.mp4").exists()
    _check_clip(work, "span_f000", 62)
    meta = json.loads((work / "clips" / "span_f000.json").read_text())
    assert meta["start"] == 1.0 and meta["video_id"] == "span"


def _make_bad_inputs(tmp_path):
    bad = {}
    bad["empty"] = tmp_path / "empty.mp4"
    bad["empty"].write_bytes(b"")
    bad["text"] = tmp_path / "text.mp4"
    bad["text"].write_text("this is not a video\n" * 50)
    good = ffmpeg_video(tmp_path / "good.mp4", seconds=3.0)
    data = good.read_bytes()
    bad["cut"] = tmp_path / "cut.mp4"  # index (moov) at the end is lost
    bad["cut"].write_bytes(data[: len(data) // 2])
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(good), "-c", "copy", "-movflags",
                    "+faststart", str(fast)], check=True)
    data = fast.read_bytes()
    bad["cut_faststart"] = tmp_path / "cut_faststart.mp4"  # index intact, media data cut
    bad["cut_faststart"].write_bytes(data[: len(data) // 2])
    bad["silent"] = ffmpeg_video(tmp_path / "silent.mp4", audio=False)
    bad["wav"] = tmp_path / "speech.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "sine=duration=2", str(bad["wav"])], check=True)
    bad["short"] = ffmpeg_video(tmp_path / "short.mp4", seconds=0.5)
    bad["mismatch"] = tmp_path / "mismatch.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25:duration=3", "-f", "lavfi", "-i",
                    "sine=duration=1", "-c:v", "libx264", "-c:a", "aac",
                    str(bad["mismatch"])], check=True)
    return bad


def test_bad_inputs_are_recorded_skips(tmp_path):
    bad = _make_bad_inputs(tmp_path)
    work, summary = _run(tmp_path, [(k, p, None, None) for k, p in bad.items()])
    assert summary.ok and summary.done == 0, summary.failures
    got = {r["key"]: r["reason"] for r in summary.failures}
    assert got == {
        "empty": "empty_file", "text": "not_a_video", "cut": "truncated",
        "cut_faststart": "truncated", "silent": "no_audio_stream", "wav": "no_video_stream",
        "short": "too_short", "mismatch": "av_length_mismatch",
    }
    lines = (work / "status" / "clip" / "failures.jsonl").read_text().splitlines()
    recs = {json.loads(line)["key"]: json.loads(line) for line in lines}
    assert set(recs) == set(got)
    assert "moov atom not found" in recs["cut"]["stderr"]  # ffmpeg's stderr is kept
    assert "of 75 frames" in recs["cut_faststart"]["detail"]
    assert list((work / "clips").glob("*.mp4")) == []  # no half-written output
    assert not list((work / "clips" / ".tmp").glob("*"))


def test_shared_media_clips(tmp_path, shared_media):
    rows = [(p.split("_")[1], shared_media / p, None, None) for p in SHARED_CLIPS]
    work, summary = _run(tmp_path, rows)
    assert summary.done == 3 and summary.ok
    _check_clip(work, "aoc_f000", 200)
    _check_clip(work, "tys_f000", 99)
    _check_clip(work, "10_f000", 108)


def test_cli_clip_and_rerun_is_noop(tmp_path):
    src = ffmpeg_video(tmp_path / "a.mp4", seconds=1.5)
    manifest = _manifest(tmp_path, [("a", src, None, None)])
    work = tmp_path / "w"
    result = CliRunner().invoke(app, ["clip", str(work), "-m", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "done" in result.output
    stat = (work / "clips" / "a_f000.mp4").stat()
    result = CliRunner().invoke(app, ["clip", str(work), "-m", str(manifest)])
    assert result.exit_code == 0
    assert (work / "clips" / "a_f000.mp4").stat().st_mtime_ns == stat.st_mtime_ns
    # other settings on the same work dir are refused, with what differs
    result = CliRunner().invoke(app, ["clip", str(work), "-m", str(manifest),
                                      "--max-seconds", "10"])
    assert result.exit_code != 0
