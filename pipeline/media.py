"""ffmpeg and ffprobe, with timeouts, typed skips and their stderr kept.

Every external call goes through `run_tool`, so every one has a timeout and a
failure keeps the tool's stderr for `failures.jsonl`. Frames are read through
an ffmpeg pipe (rawvideo rgb24), audio as 16 kHz mono float32.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from fd2talk.model.schema import SAMPLE_RATE

from .skip import PrepError, Skip, SkipReason

PROBE_TIMEOUT = 60.0  # seconds for ffprobe
# Encoder settings shared by every stage that writes video: deterministic bytes
# (bitexact muxing; x264's frame threading gave different bytes run to run here, its
# sliced threading with a fixed thread count does not) so a resumed run equals an
# uninterrupted one.
X264_ARGS = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
             "-threads", "2", "-x264-params", "sliced-threads=1"]
AAC_ARGS = ["-c:a", "aac", "-b:a", "96k", "-ac", "1", "-ar", str(SAMPLE_RATE)]
BITEXACT_ARGS = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                 "-flags:a", "+bitexact"]


def tool(name: str) -> str:
    """Path of ffmpeg/ffprobe (`FD2TALK_FFMPEG` / `FD2TALK_FFPROBE` override)."""
    path = os.environ.get(f"FD2TALK_{name.upper()}") or shutil.which(name)
    if not path:
        raise PrepError(f"{name} not found on PATH: install it with `apt-get install -y ffmpeg`")
    return path


def run_tool(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run an external tool; raise `Skip(TIMEOUT)` past `timeout`, `Skip(DECODE_ERROR)` on failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"").decode(errors="replace")
        raise Skip(SkipReason.TIMEOUT, f"{what} ran past {timeout:.0f} s", err) from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        raise Skip(SkipReason.DECODE_ERROR, f"{what} exited with {proc.returncode}", err)
    return proc


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
    cmd = [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_format",
           "-show_streams", str(path)]
    try:
        proc = run_tool(cmd, timeout, "ffprobe")
    except Skip as skip:
        if skip.reason is SkipReason.TIMEOUT:
            raise
        err = skip.stderr or ""
        if _looks_like_container(path):
            raise Skip(SkipReason.TRUNCATED, f"{path} is cut short or damaged", err) from None
        raise Skip(SkipReason.NOT_A_VIDEO, f"ffprobe cannot read {path}", err) from None
    info = json.loads(proc.stdout or b"{}")
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise Skip(SkipReason.NO_VIDEO_STREAM, f"{path} has no video stream")
    if audio is None and need_audio:
        raise Skip(SkipReason.NO_AUDIO_STREAM, f"{path} has no audio stream")
    fmt_dur = float(info.get("format", {}).get("duration") or 0.0)
    rate = video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/1"
    fps = float(Fraction(rate)) if rate not in ("0/0", "0/1") else 0.0
    if video.get("duration"):
        v_dur = float(video["duration"])
    elif fps > 0:  # e.g. Matroska keeps no stream durations: count the packets (demux only)
        v_dur = count_frames(path, timeout) / fps
    else:
        v_dur = fmt_dur
    a = audio or {}
    return Probe(
        duration=fmt_dur or v_dur,
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        fps=fps,
        video_codec=str(video.get("codec_name")),
        video_duration=v_dur,
        audio_codec=str(a.get("codec_name")),
        sample_rate=int(a.get("sample_rate") or 0),
        channels=int(a.get("channels") or 0),
        audio_duration=float(a.get("duration") or fmt_dur) if audio else 0.0,
    )


def count_frames(path: Path, timeout: float = PROBE_TIMEOUT) -> int:
    """Exact number of video frames (packets) in `path`."""
    cmd = [tool("ffprobe"), "-v", "error", "-select_streams", "v:0", "-count_packets",
           "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)]
    out = run_tool(cmd, timeout, "ffprobe -count_packets").stdout.decode().strip()
    return int(out.split(",")[0])


def iter_frames(path: Path, width: int, height: int, timeout: float,
                vf: str | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of `path` as (height, width, 3) uint8 RGB, scaled by ffmpeg.

    `vf` is an extra filter chain applied before the scale. The read is bounded by
    `timeout` seconds in total; a failing decode raises `Skip(DECODE_ERROR)`.
    """
    chain = f"{vf + ',' if vf else ''}scale={width}:{height}:flags=area"
    cmd = [tool("ffmpeg"), "-v", "error", "-nostdin", "-i", str(path), "-an", "-vf", chain,
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while True:
            if time.monotonic() > deadline:
                raise Skip(SkipReason.TIMEOUT, f"decoding {path} ran past {timeout:.0f} s")
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        if proc.returncode != 0:
            err = proc.stderr.read().decode(errors="replace")
            raise Skip(SkipReason.DECODE_ERROR, f"decoding {path} failed", err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def read_frames(path: Path, width: int, height: int, timeout: float) -> np.ndarray:
    """All frames of `path` as one (F, height, width, 3) uint8 array."""
    frames = list(iter_frames(path, width, height, timeout))
    if not frames:
        return np.zeros((0, height, width, 3), np.uint8)
    return np.stack(frames)


def read_audio(path: Path, timeout: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of `path` as float32 mono samples in [-1, 1] at `sample_rate`."""
    cmd = [tool("ffmpeg"), "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1",
           "-ar", str(sample_rate), "-f", "f32le", "-"]
    out = run_tool(cmd, timeout, f"decoding the audio of {path}").stdout
    return np.frombuffer(out, np.float32).copy()
