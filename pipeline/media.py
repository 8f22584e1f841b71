"""ffmpeg and ffprobe, with timeouts, typed skips and their stderr kept.

Every external call goes through `run_tool`, so every one has a timeout and a
failure keeps the tool's stderr for `failures.jsonl`. Frames are read through
an ffmpeg pipe (rawvideo rgb24), audio as 16 kHz mono float32.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
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
X264_PARAMS = "sliced-threads=1"
X264_ARGS = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
             "-threads", "2", "-x264-params", X264_PARAMS]
AAC_ARGS = ["-c:a", "aac", "-b:a", "96k", "-ac", "1", "-ar", str(SAMPLE_RATE)]
BITEXACT_ARGS = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                 "-flags:a", "+bitexact"]


def x264_args(keyint: int | None = None) -> list[str]:
    """`X264_ARGS`; with `keyint`, a keyframe (IDR) exactly every `keyint` frames.

    Scene-cut detection is off, so the keyframes are frames 0, keyint, 2 keyint, ...
    whatever the content (`ffmpeg -skip_frame nokey` then decodes just those).
    """
    if keyint is None:
        return list(X264_ARGS)
    params = f"{X264_PARAMS}:keyint={keyint}:min-keyint={keyint}:scenecut=0"
    return [*X264_ARGS[:-1], params]


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


@dataclass(frozen=True)
class Mp4Track:
    """One track of an mp4 as its index (moov) says."""

    kind: str  # "video", "audio", or the handler type as found (e.g. "text")
    packets: int  # samples (for video: frames)
    duration: float  # seconds presented: the edit list's span (ffprobe's stream duration)


def _mp4_boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO-BMFF boxes in buf[start:end]."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, start)
        head = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", buf, start + 8)
            head = 16
        elif size == 0:
            size = end - start
        if size < head or start + size > end:
            raise ValueError(f"box {kind!r} at {start} has a bad size {size}")
        yield kind, start + head, start + size
        start += size


def _mp4_find(buf: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    """Payload span of the first box at `path` (e.g. b"mdia", b"mdhd") under buf[start:end]."""
    for kind, s, e in _mp4_boxes(buf, start, end):
        if kind == path[0]:
            return (s, e) if len(path) == 1 else _mp4_find(buf, s, e, *path[1:])
    return None


def _mp4_need(buf: bytes, start: int, end: int, *path: bytes) -> int:
    """Payload start of the box at `path`; ValueError when there is none."""
    span = _mp4_find(buf, start, end, *path)
    if span is None:
        raise ValueError(f"no {b'/'.join(path).decode()} box")
    return span[0]


def _read_moov(path: Path) -> bytes:
    """The `moov` box of an mp4, reading only box headers until it is found."""
    with open(path, "rb") as f:
        size_total = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size_total:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack_from(">I4s", head)
            if size == 1:
                (size,) = struct.unpack_from(">Q", head, 8)
            elif size == 0:
                size = size_total - pos
            if size < 8:
                break
            if kind == b"moov":
                f.seek(pos)
                return f.read(size)
            pos += size
    raise ValueError("no moov box")


def mp4_tracks(path: Path) -> list[Mp4Track]:
    """The tracks of an mp4/mov from its index, without starting a process.

    Cheap enough to check every output of a stage (packet counts and presented
    durations, as `ffprobe -count_packets` reports them for ffmpeg's own mp4s).
    A file that is no complete mp4 raises `Skip(DECODE_ERROR)`.
    """
    kinds = {b"vide": "video", b"soun": "audio"}
    try:
        moov = _read_moov(Path(path))
        mvhd = _mp4_need(moov, 8, len(moov), b"mvhd")
        # version 0: 4-byte times (scale at +12), version 1: 8-byte times (scale at +20)
        (movie_scale,) = struct.unpack_from(">I", moov, mvhd + (20 if moov[mvhd] else 12))
        tracks = []
        for kind, s, e in _mp4_boxes(moov, 8, len(moov)):
            if kind != b"trak":
                continue
            hdlr = _mp4_need(moov, s, e, b"mdia", b"hdlr")
            mdhd = _mp4_need(moov, s, e, b"mdia", b"mdhd")
            stsz = _mp4_need(moov, s, e, b"mdia", b"minf", b"stbl", b"stsz")
            if moov[mdhd]:
                scale, duration = struct.unpack_from(">IQ", moov, mdhd + 20)
            else:
                scale, duration = struct.unpack_from(">II", moov, mdhd + 12)
            seconds = duration / scale
            elst = _mp4_find(moov, s, e, b"edts", b"elst")
            if elst:  # the presented span: the non-empty edits (media time != -1)
                version, (n,) = moov[elst[0]], struct.unpack_from(">I", moov, elst[0] + 4)
                fmt, step = (">Qq", 20) if version else (">Ii", 12)
                edits = [struct.unpack_from(fmt, moov, elst[0] + 8 + k * step) for k in range(n)]
                seconds = sum(d for d, t in edits if t != -1) / movie_scale
            handler = moov[hdlr + 8:hdlr + 12]
            (packets,) = struct.unpack_from(">I", moov, stsz + 8)
            tracks.append(Mp4Track(kinds.get(handler, handler.decode("latin-1")), packets,
                                   seconds))
        return tracks
    except (ValueError, struct.error) as e:
        raise Skip(SkipReason.DECODE_ERROR, f"{path} is no complete mp4: {e}") from None


def iter_frames(path: Path, width: int, height: int, timeout: float,
                vf: str | None = None, *, input_args: Sequence[str] = (),
                output_args: Sequence[str] = ()) -> Iterator[np.ndarray]:
    """Yield the frames of `path` as (height, width, 3) uint8 RGB, scaled by ffmpeg.

    `vf` is an extra filter chain applied before the scale. `input_args` go before
    `-i` (e.g. `-ss T` to seek, `-skip_frame nokey` to decode keyframes only),
    `output_args` after it (e.g. `-frames:v N`, `-fps_mode passthrough`). The read
    is bounded by `timeout` seconds in total; a failing decode raises
    `Skip(DECODE_ERROR)`.
    """
    chain = f"{vf + ',' if vf else ''}scale={width}:{height}:flags=area"
    cmd = [tool("ffmpeg"), "-v", "error", "-nostdin", *input_args, "-i", str(path), "-an",
           "-vf", chain, *output_args, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    # stderr goes to a file, not a pipe: a damaged file makes ffmpeg print an error per
    # frame, and an unread pipe would fill up and block it (and us, reading its stdout).
    # A timer kills ffmpeg at the deadline, so a read that would block forever returns.
    err_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()

    def stderr() -> str:
        err_file.seek(0)
        return err_file.read()[-20000:].decode(errors="replace")

    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        proc.wait()
        if not timer.is_alive():
            raise Skip(SkipReason.TIMEOUT, f"decoding {path} ran past {timeout:.0f} s", stderr())
        if proc.returncode != 0:
            raise Skip(SkipReason.DECODE_ERROR, f"decoding {path} failed", stderr())
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        err_file.close()


def read_frames(path: Path, width: int, height: int, timeout: float) -> np.ndarray:
    """All frames of `path` as one (F, height, width, 3) uint8 array."""
    frames = list(iter_frames(path, width, height, timeout))
    if not frames:
        return np.zeros((0, height, width, 3), np.uint8)
    return np.stack(frames)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM mono WAV (as the crop stage writes) as float32 samples in [-1, 1]."""
    import wave

    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: expected 16-bit mono {SAMPLE_RATE} Hz PCM")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def read_audio(path: Path, timeout: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of `path` as float32 mono samples in [-1, 1] at `sample_rate`."""
    cmd = [tool("ffmpeg"), "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1",
           "-ar", str(sample_rate), "-f", "f32le", "-"]
    out = run_tool(cmd, timeout, f"decoding the audio of {path}").stdout
    return np.frombuffer(out, np.float32).copy()
