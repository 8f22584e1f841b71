"""ffmpeg and ffprobe, with timeouts, typed skips and their stderr kept.

ffmpeg command lines are built with ffmpeg-python's graph API (`ffmpeg.input(...)`,
`.filter(...)`, `ffmpeg.output(...)`) and compiled by `command`; they run through
`run_tool` (or a pipe with a kill timer), never through ffmpeg-python's own `run`, which
has no timeout. So every call has a timeout, and a failure keeps the tool's stderr for
`failures.jsonl`. Frames are read through an ffmpeg pipe (rawvideo rgb24), audio as
16 kHz mono float32. Encoder settings are dicts of ffmpeg output options (`X264`, `AAC`,
`BITEXACT`), given to `ffmpeg.output` as keywords.
"""

from __future__ import annotations

import json
import math
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

import ffmpeg
import numpy as np

from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.core.skip import PrepError, Skip, SkipReason

PROBE_TIMEOUT = 60.0  # seconds for ffprobe
AV_TOLERANCE = 1.5 / FPS  # seconds an encoded AAC track may differ from its video (framing)
# Encoder settings shared by every stage that writes video: deterministic bytes
# (bitexact muxing; x264's frame threading gave different bytes run to run here, its
# sliced threading with a fixed thread count does not) so a resumed run equals an
# uninterrupted one.
X264_PARAMS = "sliced-threads=1"
X264 = {"c:v": "libx264", "preset": "veryfast", "crf": 18, "pix_fmt": "yuv420p", "threads": 2,
        "x264-params": X264_PARAMS}
AAC = {"c:a": "aac", "b:a": "96k", "ac": 1, "ar": SAMPLE_RATE}
BITEXACT = {"map_metadata": -1, "fflags": "+bitexact", "flags:v": "+bitexact",
            "flags:a": "+bitexact"}


def x264(keyint: int | None = None) -> dict[str, object]:
    """`X264`; with `keyint`, a keyframe (IDR) exactly every `keyint` frames.

    Scene-cut detection is off, so the keyframes are frames 0, keyint, 2 keyint, ...
    whatever the content (`ffmpeg -skip_frame nokey` then decodes just those).
    """
    if keyint is None:
        return dict(X264)
    return {**X264, "x264-params": f"{X264_PARAMS}:keyint={keyint}:min-keyint={keyint}:scenecut=0"}


def as_args(options: dict[str, object]) -> list[str]:
    """Output options as command-line words (`{"crf": 18}` -> `["-crf", "18"]`), in
    ffmpeg-python's order, for commands written out by hand (tests, benchmarks)."""
    return [w for k, v in sorted(options.items()) for w in (f"-{k}", str(v))]


def command(stream, overwrite: bool = True) -> list[str]:
    """The ffmpeg argument list of an ffmpeg-python output `stream` (quiet, never reading
    stdin, overwriting its outputs unless `overwrite` is False)."""
    head = [tool("ffmpeg"), "-v", "error", "-nostdin", *(["-y"] if overwrite else [])]
    return stream.compile(cmd=head)


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
    cmd = [tool("ffprobe"), "-show_format", "-show_streams", "-of", "json", "-v", "error",
           str(path)]
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
        raise Skip(SkipReason.DECODE_ERROR, f"ffprobe's output for {path} is no json: {e}",
                   proc.stdout[-2000:].decode(errors="replace")) from None
    streams = info.get("streams", []) if isinstance(info, dict) else []
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
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
    cmd = [tool("ffprobe"), "-v", "error", "-select_streams", select, "-count_packets",
           "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)]
    proc = run_tool(cmd, timeout, "ffprobe -count_packets")
    out = proc.stdout.decode(errors="replace").strip()
    try:
        return int(out.split(",")[0])
    except ValueError:
        raise Skip(SkipReason.DECODE_ERROR, f"ffprobe cannot count the frames of {path} "
                   f"(it says {out[:40]!r})", proc.stderr.decode(errors="replace")) from None


@dataclass(frozen=True)
class Mp4Track:
    """One track of an mp4 as its index (moov) says."""

    kind: str  # "video", "audio", or the handler type as found (e.g. "text")
    packets: int  # samples (for video: frames)
    duration: float  # seconds presented: the edit list's span (ffprobe's stream duration)
    start: float = 0.0  # seconds of empty edits before the first sample is presented


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


def _mp4_need(buf: bytes, start: int, end: int, *path: bytes) -> bytes:
    """Payload of the box at `path` (a copy: a read past its end fails instead of reading
    the next box); ValueError when there is none."""
    span = _mp4_find(buf, start, end, *path)
    if span is None:
        raise ValueError(f"no {b'/'.join(path).decode()} box")
    return buf[span[0]:span[1]]


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
                moov = f.read(size)
                if len(moov) != size:
                    raise ValueError(f"the moov box is cut short ({len(moov)} of {size} bytes)")
                return moov
            pos += size
    raise ValueError("no moov box")


def _edits(elst: bytes, movie_scale: int) -> tuple[float, float]:
    """(seconds presented, seconds of empty edits before the first sample) of an edit list."""
    version, (n,) = elst[0], struct.unpack_from(">I", elst, 4)
    fmt, step = (">Qq", 20) if version else (">Ii", 12)
    edits = [struct.unpack_from(fmt, elst, 8 + k * step) for k in range(n)]
    first = next((k for k, (_, t) in enumerate(edits) if t != -1), len(edits))
    return (sum(d for d, t in edits if t != -1) / movie_scale,
            sum(d for d, _ in edits[:first]) / movie_scale)


def mp4_tracks(path: Path) -> list[Mp4Track]:
    """The tracks of an mp4/mov from its index, without starting a process.

    Cheap enough to check every output of a stage (packet counts and presented
    durations, as `ffprobe -count_packets` reports them for ffmpeg's own mp4s, and
    the delay of an empty edit before a track starts). A file that is no complete
    mp4 (a box cut short, a zero time scale...) raises `Skip(DECODE_ERROR)`.
    """
    kinds = {b"vide": "video", b"soun": "audio"}
    try:
        moov = _read_moov(Path(path))
        mvhd = _mp4_need(moov, 8, len(moov), b"mvhd")
        # version 0: 4-byte times (scale at +12), version 1: 8-byte times (scale at +20)
        (movie_scale,) = struct.unpack_from(">I", mvhd, 20 if mvhd[0] else 12)
        tracks = []
        for kind, s, e in _mp4_boxes(moov, 8, len(moov)):
            if kind != b"trak":
                continue
            hdlr = _mp4_need(moov, s, e, b"mdia", b"hdlr")
            mdhd = _mp4_need(moov, s, e, b"mdia", b"mdhd")
            stsz = _mp4_need(moov, s, e, b"mdia", b"minf", b"stbl", b"stsz")
            if mdhd[0]:
                scale, duration = struct.unpack_from(">IQ", mdhd, 20)
            else:
                scale, duration = struct.unpack_from(">II", mdhd, 12)
            seconds, start = duration / scale, 0.0
            elst = _mp4_find(moov, s, e, b"edts", b"elst")
            if elst:  # the presented span: the non-empty edits (media time != -1)
                seconds, start = _edits(moov[elst[0]:elst[1]], movie_scale)
            handler = hdlr[8:12]
            if len(handler) != 4:
                raise ValueError(f"the hdlr box has {len(hdlr)} bytes")
            (packets,) = struct.unpack_from(">I", stsz, 8)
            tracks.append(Mp4Track(kinds.get(handler, handler.decode("latin-1")), packets,
                                   seconds, start))
        return tracks
    except (ValueError, struct.error, IndexError, ZeroDivisionError) as e:
        raise Skip(SkipReason.DECODE_ERROR, f"{path} is no complete mp4: {e}") from None


def iter_frames(path: Path, width: int, height: int, timeout: float,
                filters: Sequence[tuple] = (), *, input_kwargs: dict | None = None,
                output_kwargs: dict | None = None, stream: int | None = None
                ) -> Iterator[np.ndarray]:
    """Yield the frames of `path` as (height, width, 3) uint8 RGB, scaled by ffmpeg: of
    stream index `stream` (`probe(...).video_index` for a file from outside, which may carry
    cover art before its video), else of the first video stream (fd2talk's own files).

    `filters`: video filters applied before the scale, each `(name, *arguments)`, e.g.
    `[("fps", 25), ("crop", w, h, x, y)]`. `input_kwargs` are input options (e.g.
    `{"ss": T}` to seek, `{"skip_frame": "nokey"}` to decode keyframes only),
    `output_kwargs` output options (e.g. `{"frames:v": N, "fps_mode": "passthrough"}`).
    The read is bounded by `timeout` seconds in total; a failing decode raises
    `Skip(DECODE_ERROR)`.
    """
    video = ffmpeg.input(str(path), **(input_kwargs or {}))[
        str(stream) if stream is not None else "v:0"]
    for name, *args in filters:
        video = video.filter(name, *args)
    video = video.filter("scale", width, height, flags="area")
    cmd = command(ffmpeg.output(video, "pipe:", format="rawvideo", pix_fmt="rgb24",
                                **(output_kwargs or {})), overwrite=False)
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
    """A 16-bit PCM mono WAV (as the crop stage writes) as float32 samples in [-1, 1].

    A damaged file, another format, or a header that promises more samples than the
    file holds raises `Skip(DECODE_ERROR)`.
    """
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            fmt = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            expected = w.getnframes()
            data = w.readframes(expected)
    except (wave.Error, EOFError) as e:
        raise Skip(SkipReason.DECODE_ERROR, f"{path} is no readable WAV: {e}") from None
    if fmt != (1, 2, SAMPLE_RATE):
        raise Skip(SkipReason.DECODE_ERROR, f"{path} is {fmt[0]} channel(s), {8 * fmt[1]} bit, "
                   f"{fmt[2]} Hz; expected 16-bit mono {SAMPLE_RATE} Hz PCM")
    if len(data) != 2 * expected:
        raise Skip(SkipReason.DECODE_ERROR, f"{path}: its header says {expected} samples, it "
                   f"holds {len(data) // 2}")
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def read_audio(path: Path, timeout: float, sample_rate: int = SAMPLE_RATE,
               limit: float | None = None) -> np.ndarray:
    """The first audio stream of `path` as float32 mono samples in [-1, 1] at `sample_rate`
    (its first `limit` seconds only, when given: memory bounded whatever the file holds)."""
    cut = {"t": f"{limit:g}"} if limit is not None else {}
    cmd = command(ffmpeg.output(ffmpeg.input(str(path))["a:0"], "pipe:", format="f32le", ac=1,
                                ar=sample_rate, **cut), overwrite=False)
    out = run_tool(cmd, timeout, f"decoding the audio of {path}").stdout
    return np.frombuffer(out, np.float32).copy()
