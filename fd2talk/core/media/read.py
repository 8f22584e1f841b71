"""Decoded media: frames through an ffmpeg pipe (rawvideo rgb24, scaled by ffmpeg), audio as
16 kHz mono float32 (`read_audio`, any file; `read_wav`, the crop stage's PCM without a
process). Every read is bounded by a timeout; a failing decode raises a `Skip`."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import ffmpeg
import numpy as np

from fd2talk.core.media.tools import command, run_tool
from fd2talk.core.schema import SAMPLE_RATE
from fd2talk.core.skip import Skip, SkipReason


def iter_frames(
    path: Path,
    width: int,
    height: int,
    timeout: float,
    filters: Sequence[tuple] = (),
    *,
    input_kwargs: dict | None = None,
    output_kwargs: dict | None = None,
    stream: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames of `path` as (height, width, 3) uint8 RGB, scaled by ffmpeg: of
    stream index `stream` (`probe(...).video_index` for a file from outside, which may carry
    cover art before its video), else of the first video stream (fd2talk's own files).

    `filters`: video filters applied before the scale, each `(name, *arguments)`, e.g.
    `[("fps", FPS), ("crop", w, h, x, y)]`. `input_kwargs` are input options (e.g.
    `{"ss": T}` to seek, `{"skip_frame": "nokey"}` to decode keyframes only),
    `output_kwargs` output options (e.g. `{"frames:v": N, "fps_mode": "passthrough"}`).
    The read is bounded by `timeout` seconds in total; a failing decode raises
    `Skip(DECODE_ERROR)`.
    """
    video = ffmpeg.input(str(path), **(input_kwargs or {}))[
        str(stream) if stream is not None else "v:0"
    ]
    for name, *args in filters:
        video = video.filter(name, *args)
    video = video.filter("scale", width, height, flags="area")
    cmd = command(
        ffmpeg.output(video, "pipe:", format="rawvideo", pix_fmt="rgb24", **(output_kwargs or {})),
        overwrite=False,
    )
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
        raise Skip(
            SkipReason.DECODE_ERROR,
            f"{path} is {fmt[0]} channel(s), {8 * fmt[1]} bit, "
            f"{fmt[2]} Hz; expected 16-bit mono {SAMPLE_RATE} Hz PCM",
        )
    if len(data) != 2 * expected:
        raise Skip(
            SkipReason.DECODE_ERROR,
            f"{path}: its header says {expected} samples, it holds {len(data) // 2}",
        )
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def read_audio(
    path: Path, timeout: float, sample_rate: int = SAMPLE_RATE, limit: float | None = None
) -> np.ndarray:
    """The first audio stream of `path` as float32 mono samples in [-1, 1] at `sample_rate`
    (its first `limit` seconds only, when given: memory bounded whatever the file holds)."""
    cut = {"t": f"{limit:g}"} if limit is not None else {}
    cmd = command(
        ffmpeg.output(
            ffmpeg.input(str(path))["a:0"], "pipe:", format="f32le", ac=1, ar=sample_rate, **cut
        ),
        overwrite=False,
    )
    out = run_tool(cmd, timeout, f"decoding the audio of {path}").stdout
    return np.frombuffer(out, np.float32).copy()
