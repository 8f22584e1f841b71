"""Generation's output: the mp4 written frame batch by frame batch (bounded memory), with the
speech muxed as AAC.

Every problem is a `UserError`; nothing half-written is left at the output path (the encoder
writes a hidden partial file beside it and renames it when ffmpeg has finished).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.media.tools import command
from fd2talk.core.schema import FPS
from fd2talk.core.skip import PrepError


class VideoWriter:
    """H.264 (yuv420p, 25 fps) + the audio of `audio` as AAC, fed (n, H, W, 3) uint8 batches.

    ffmpeg reads raw frames from a pipe, so only the batch in hand is in memory. `size`
    (w, h): ffmpeg scales the frames to it (lanczos). The file appears at `out` only when
    ffmpeg has finished; on any error (or `abort()`) the partial file is removed.
    """

    def __init__(
        self,
        out: str | Path,
        width: int,
        height: int,
        audio: str | Path,
        size: tuple[int, int] | None = None,
        crf: int = 18,
    ):
        self.out = Path(out)
        if self.out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise UserError(f"--out {self.out}: use a .mp4 (or .mov/.mkv) name")
        if self.out.is_dir():
            raise UserError(f"--out {self.out} is a directory: give a file name ending in .mp4")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height, self.frames = width, height, 0
        self.tmp = self.out.parent / f".{self.out.stem}.partial{self.out.suffix}"
        cmd = self.command(width, height, audio, self.tmp, size, crf)
        self._err = tempfile.TemporaryFile()  # a pipe nobody reads could fill and block
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._err)

    @staticmethod
    def command(
        width: int,
        height: int,
        audio: str | Path,
        out: Path,
        size: tuple[int, int] | None = None,
        crf: int = 18,
    ) -> list[str]:
        """ffmpeg's argument list (built with ffmpeg-python): raw RGB frames from stdin, the
        first audio stream of `audio`, H.264 + AAC into `out`."""
        video = ffmpeg.input(
            "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=FPS
        )["v:0"]
        if size and tuple(size) != (width, height):
            video = video.filter("scale", size[0], size[1], flags="lanczos")
        output = ffmpeg.output(
            video,
            ffmpeg.input(str(audio))["a:0"],
            str(out),
            preset="medium",
            crf=crf,
            pix_fmt="yuv420p",
            ar=48000,
            movflags="+faststart",
            **{"c:v": "libx264", "c:a": "aac", "b:a": "128k"},
        )
        try:
            return command(output)
        except PrepError as e:  # no ffmpeg
            raise UserError(str(e)) from None

    def write(self, frames: np.ndarray) -> None:
        """(n, H, W, 3) uint8 RGB frames, in order."""
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames {frames.shape} {frames.dtype}, expected (n, {self.height}, "
                f"{self.width}, 3) uint8"
            )
        try:
            self.proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:
            self.abort()
            raise UserError(f"ffmpeg stopped while writing {self.out}: {self._stderr()}") from None
        self.frames += len(frames)

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()[-2000:].decode(errors="replace").strip()

    def close(self) -> Path:
        """Finish the file and move it to `out`."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = self.proc.wait()
        if rc != 0 or self.frames == 0:
            err = self._stderr()
            self.abort()
            raise UserError(f"ffmpeg could not write {self.out} (exit {rc}): {err}")
        os.replace(self.tmp, self.out)
        self._err.close()
        return self.out

    def abort(self) -> None:
        """Stop ffmpeg and remove the partial file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()
