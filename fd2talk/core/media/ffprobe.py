"""What ffprobe says about a media file (`probe`), and an exact frame count (`count_frames`).

Both run ffprobe with a timeout; whatever is wrong with a file is a `Skip` naming it (empty,
cut short, not a video, no video or audio stream, a garbled field).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from fd2talk.core.media.tools import run_tool, tool
from fd2talk.core.skip import Skip, SkipReason

PROBE_TIMEOUT = 60.0  # seconds for ffprobe


@dataclass(frozen=True)
class Probe:
    """What ffprobe says about a media file (durations in seconds)."""

    duration: float
    width: int
    height: int
    fps: float
    video_codec: str
    video_duration: float
    audio_codec: str
    sample_rate: int
    channels: int
    audio_duration: float
    video_index: int = 0  # absolute stream index of the video (cover art is never chosen)
    audio_index: int | None = None  # absolute stream index of the audio; None: no audio
    video_start: float = 0.0  # seconds the video stream starts at (ffprobe's start_time)
    audio_start: float = 0.0  # seconds the audio stream starts at


def _rate(value: object) -> float:
    """A frame rate as ffprobe writes it ("25/1", "0/0", "30000/1001"); 0.0 when unusable."""
    try:
        rate = float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return rate if math.isfinite(rate) and rate > 0 else 0.0


def _seconds(value: object, what: str, path: Path) -> float:
    """A duration/time field of ffprobe's json (absent: 0.0); a garbled one raises a Skip."""
    if value in (None, "", "N/A"):
        return 0.0
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise Skip(SkipReason.DECODE_ERROR, f"ffprobe gives {path} an unusable {what} {value!r}")
    return out


def _int(value: object) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


# Signatures of containers ffmpeg reads: a file that starts like one but cannot be
# probed was cut short (e.g. an mp4 whose index at the end is missing).
_CONTAINER_MAGIC = (b"ftyp", b"RIFF", b"\x1a\x45\xdf\xa3", b"OggS", b"FLV", b"\x00\x00\x01\xba")


def _looks_like_container(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return any(m in head for m in _CONTAINER_MAGIC)


def probe(path: Path, need_audio: bool = True, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Probe `path`; raise a `Skip` naming what is wrong with it."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise Skip(SkipReason.EMPTY_FILE, f"{path} has 0 bytes")
    # ffmpeg.probe's own argument list; its `probe` has no timeout, so run_tool runs it
    cmd = [
        tool("ffprobe"),
        "-show_format",
        "-show_streams",
        "-of",
        "json",
        "-v",
        "error",
        str(path),
    ]
    try:
        proc = run_tool(cmd, timeout, "ffprobe")
    except Skip as skip:
        if skip.reason is SkipReason.TIMEOUT:
            raise
        err = skip.stderr or ""
        if _looks_like_container(path):
            raise Skip(SkipReason.TRUNCATED, f"{path} is cut short or damaged", err) from None
        raise Skip(SkipReason.NOT_A_VIDEO, f"ffprobe cannot read {path}", err) from None
    try:
        info = json.loads(proc.stdout or b"{}")
    except ValueError as e:
        raise Skip(
            SkipReason.DECODE_ERROR,
            f"ffprobe's output for {path} is no json: {e}",
            proc.stdout[-2000:].decode(errors="replace"),
        ) from None
    streams = info.get("streams", []) if isinstance(info, dict) else []
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise Skip(SkipReason.NO_VIDEO_STREAM, f"{path} has no video stream")
    if audio is None and need_audio:
        raise Skip(SkipReason.NO_AUDIO_STREAM, f"{path} has no audio stream")
    fmt_dur = _seconds(info.get("format", {}).get("duration"), "duration", path)
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    if _seconds(video.get("duration"), "video duration", path) > 0:
        v_dur = _seconds(video["duration"], "video duration", path)
    elif fps > 0:  # e.g. Matroska keeps no stream durations: count the packets (demux only)
        v_dur = count_frames(path, timeout, _int(video.get("index"))) / fps
    else:
        v_dur = fmt_dur
    a = audio or {}
    a_dur = _seconds(a.get("duration"), "audio duration", path) or fmt_dur
    return Probe(
        duration=fmt_dur or v_dur,
        width=_int(video.get("width")),
        height=_int(video.get("height")),
        fps=fps,
        video_codec=str(video.get("codec_name")),
        video_duration=v_dur,
        audio_codec=str(a.get("codec_name")),
        sample_rate=_int(a.get("sample_rate")),
        channels=_int(a.get("channels")),
        audio_duration=a_dur if audio else 0.0,
        video_index=_int(video.get("index")),
        audio_index=_int(audio.get("index")) if audio else None,
        video_start=_seconds(video.get("start_time"), "video start time", path),
        audio_start=_seconds(a.get("start_time"), "audio start time", path),
    )


def count_frames(path: Path, timeout: float = PROBE_TIMEOUT, stream: int | None = None) -> int:
    """Exact number of video frames (packets) in `path`: stream index `stream`, else the
    first video stream. A file ffprobe cannot count raises `Skip(DECODE_ERROR)`."""
    select = str(stream) if stream is not None else "v:0"
    cmd = [
        tool("ffprobe"),
        "-v",
        "error",
        "-select_streams",
        select,
        "-count_packets",
        "-show_entries",
        "stream=nb_read_packets",
        "-of",
        "csv=p=0",
        str(path),
    ]
    proc = run_tool(cmd, timeout, "ffprobe -count_packets")
    out = proc.stdout.decode(errors="replace").strip()
    try:
        return int(out.split(",")[0])
    except ValueError:
        raise Skip(
            SkipReason.DECODE_ERROR,
            f"ffprobe cannot count the frames of {path} (it says {out[:40]!r})",
            proc.stderr.decode(errors="replace"),
        ) from None
