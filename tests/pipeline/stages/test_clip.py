"""Stage `clip`: any input format -> 25 fps CFR clips with 16 kHz mono audio; bad input -> skips."""

import json
import subprocess

import numpy as np
import pytest
from helpers import SHARED_CLIPS, ffmpeg_video
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core import media
from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.core.skip import Skip, SkipReason
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.stages.clip import KEYINT, ClipConfig, ClipStage, check_starts, fragments


def counting_manifest(tmp_path, rows):
    path = tmp_path / "manifest.csv"
    lines = ["key,path,start,end,video_id"] + [
        f"{k},{p},{s if s is not None else ''},{e if e is not None else ''},{k}"
        for k, p, s, e in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tmp_path, rows, **cfg):
    work = tmp_path / "work"
    stage = ClipStage(ClipConfig(manifest=str(counting_manifest(tmp_path, rows)), **cfg))
    return work, run_stage(stage, work, progress=False)


def _keyframes(mp4):
    """Frame numbers of the video packets flagged as keyframes (demuxing only)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
            str(mp4),
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    rows = [line.split(",") for line in out.split()]
    return sorted(round(float(t) * FPS) for t, flags in rows if "K" in flags)


def _check_clip(work, key, frames):
    mp4 = work / "clips" / f"{key}.mp4"
    info = media.probe(mp4)
    assert (info.fps, info.sample_rate, info.channels) == (FPS, SAMPLE_RATE, 1)
    assert media.count_frames(mp4) == frames
    assert abs(info.audio_duration - frames / FPS) <= 0.065  # AAC frames are 64 ms
    meta = json.loads(mp4.with_suffix(".json").read_text())
    assert meta["frames"] == frames and meta["fps"] == FPS
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


@pytest.mark.parametrize(
    "fps, sr, channels, vcodec, ext, size",
    [
        (24, 44100, 2, "libx264", "mp4", "320x240"),
        (30000 / 1001, 16000, 1, "mpeg4", "mkv", "320x240"),
        (30, 48000, 2, "mpeg4", "avi", "321x241"),  # odd sides: x264's 4:2:0 needs even ones
        (25, 22050, 1, "libx264", "mov", "320x240"),
    ],
)
def test_formats_are_normalised(tmp_path, fps, sr, channels, vcodec, ext, size):
    src = ffmpeg_video(
        tmp_path / f"src.{ext}",
        seconds=2.0,
        fps=fps,
        sample_rate=sr,
        channels=channels,
        vcodec=vcodec,
        size=size,
    )
    work, summary = _run(tmp_path, [("v", src, None, None)])
    assert summary.done == 1 and summary.ok, summary.failures
    _check_clip(work, "v_f000", 50)
    meta = json.loads((work / "clips" / "v_f000.json").read_text())
    assert (meta["width"], meta["height"]) == (320, 240)


def test_start_end_and_long_sources_split(tmp_path):
    src = ffmpeg_video(tmp_path / "long.mp4", seconds=6.0)
    work, summary = _run(
        tmp_path, [("whole", src, None, None), ("span", src, 1.0, 3.5)], max_seconds=2.5
    )
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
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(good),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(fast),
        ],
        check=True,
    )
    data = fast.read_bytes()
    bad["cut_faststart"] = tmp_path / "cut_faststart.mp4"  # index intact, media data cut
    bad["cut_faststart"].write_bytes(data[: len(data) // 2])
    bad["silent"] = ffmpeg_video(tmp_path / "silent.mp4", audio=False)
    bad["wav"] = tmp_path / "speech.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=2", str(bad["wav"])],
        check=True,
    )
    bad["short"] = ffmpeg_video(tmp_path / "short.mp4", seconds=0.5)
    bad["mismatch"] = tmp_path / "mismatch.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            str(bad["mismatch"]),
        ],
        check=True,
    )
    return bad


def test_bad_inputs_are_recorded_skips(tmp_path):
    bad = _make_bad_inputs(tmp_path)
    work, summary = _run(tmp_path, [(k, p, None, None) for k, p in bad.items()])
    assert summary.ok and summary.done == 0, summary.failures
    got = {r["key"]: r["reason"] for r in summary.failures}
    assert got == {
        "empty": "empty_file",
        "text": "not_a_video",
        "cut": "truncated",
        "cut_faststart": "truncated",
        "silent": "no_audio_stream",
        "wav": "no_video_stream",
        "short": "too_short",
        "mismatch": "av_length_mismatch",
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
    manifest = counting_manifest(tmp_path, [("a", src, None, None)])
    work = tmp_path / "w"
    result = CliRunner().invoke(app, ["clip", str(work), "-m", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "done" in result.output
    stat = (work / "clips" / "a_f000.mp4").stat()
    result = CliRunner().invoke(app, ["clip", str(work), "-m", str(manifest)])
    assert result.exit_code == 0
    assert (work / "clips" / "a_f000.mp4").stat().st_mtime_ns == stat.st_mtime_ns
    # other settings on the same work dir are refused, with what differs
    result = CliRunner().invoke(
        app, ["clip", str(work), "-m", str(manifest), "--max-seconds", "10"]
    )
    assert result.exit_code != 0


CLICK_AT = 1.0  # seconds into the audio stream's own timeline


def _offset_source(tmp_path, delay_audio: bool):
    """A 3 s source whose audio is a click at CLICK_AT s; one of its streams starts 0.2 s late
    (`-itsoffset`), so the click is presented at CLICK_AT + 0.2 s (late audio) or CLICK_AT s
    (late video). Returns (source, its video without the offset)."""
    video = ffmpeg_video(tmp_path / "v.mp4", seconds=3.0, size="160x120", audio=False)
    click = tmp_path / "click.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"aevalsrc='if(between(t,{CLICK_AT},{CLICK_AT + 0.005}),0.9,0)':s=16000:d=3",
            "-c:a",
            "pcm_s16le",
            str(click),
        ],
        check=True,
    )
    late, early = (click, video) if delay_audio else (video, click)
    src = tmp_path / "offset.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(early),
            "-itsoffset",
            "0.2",
            "-i",
            str(late),
            "-map",
            f"{0 if delay_audio else 1}:v",
            "-map",
            f"{1 if delay_audio else 0}:a",
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            str(src),
        ],
        check=True,
    )
    return src, video


def _frame_of(clip, video, k):
    """Which frame of `video` the clip's frame `k` shows (nearest in pixels)."""
    frames = media.read_frames(video, 80, 60, 60).astype(np.float32)
    got = media.read_frames(clip, 80, 60, 60)[k].astype(np.float32)
    return int(np.argmin([np.abs(got - f).mean() for f in frames]))


@pytest.mark.parametrize("delay_audio", [True, False])
def test_stream_offsets_keep_audio_in_step(tmp_path, delay_audio):
    """A stream that starts late: the clip's audio sample 0 and video frame 0 are presented at
    the same time, so the click stays where it was presented (within a frame), and the
    crop stage can count frames and samples from 0."""
    src, video = _offset_source(tmp_path, delay_audio)
    info = media.probe(src)
    assert (info.audio_start > 0.1) == delay_audio and (info.video_start > 0.1) != delay_audio
    presented = CLICK_AT + (0.2 if delay_audio else 0.0)
    for start in (None, 0.5):
        (tmp_path / f"s{start}").mkdir()
        work, summary = _run(tmp_path / f"s{start}", [("o", src, start, None)])
        assert summary.done == 1, summary.failures
        clip = work / "clips" / "o_f000.mp4"
        assert all(t.start == 0 for t in media.mp4_tracks(clip))
        out = media.probe(clip)
        assert out.audio_start == out.video_start == 0
        audio = media.read_audio(clip, 60)
        at = int(np.argmax(np.abs(audio)))
        expected = (presented - (start or 0.0)) * SAMPLE_RATE
        assert abs(at - expected) <= 640, (start, at, expected)
        # the video keeps its place too: clip frame 25 is presented at 1 s after the start
        shown = FPS + round((start or 0.0) * FPS) - (0 if delay_audio else 5)
        assert abs(_frame_of(clip, video, FPS) - shown) <= 1


def test_clip_starting_late_is_refused(tmp_path):
    """A clip whose audio starts after its video (an empty edit: what the clip stage wrote
    before it led late audio in with silence) is an av mismatch, not a clip."""
    src, _ = _offset_source(tmp_path, delay_audio=True)
    old = tmp_path / "old.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-t",
            "2",
            "-af",
            "aresample=16000",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            str(old),
        ],
        check=True,
    )
    assert [t.start for t in media.mp4_tracks(old) if t.kind == "audio"][0] > 0.05
    with pytest.raises(Skip) as err:
        check_starts(old, media.probe(old))
    assert err.value.reason is SkipReason.AV_MISMATCH and "audio starts at" in err.value.detail


def test_streams_probe_chose_are_the_ones_cut(tmp_path):
    """Audio first, then video, then cover art: the clip takes probe's streams by index."""
    base = ffmpeg_video(tmp_path / "base.mp4", seconds=1.5)
    cover = tmp_path / "cover.png"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=red:size=64x64",
            "-frames:v",
            "1",
            str(cover),
        ],
        check=True,
    )
    src = tmp_path / "order.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(base),
            "-i",
            str(cover),
            "-map",
            "0:a",
            "-map",
            "0:v",
            "-map",
            "1",
            "-c",
            "copy",
            "-disposition:v:1",
            "attached_pic",
            str(src),
        ],
        check=True,
    )
    info = media.probe(src)
    assert (info.audio_index, info.video_index) == (0, 1)
    assert (info.width, info.height) == (320, 240)  # not the 64x64 cover
    work, summary = _run(tmp_path, [("o", src, None, None)])
    assert summary.done == 1, summary.failures
    _check_clip(work, "o_f000", 37)
