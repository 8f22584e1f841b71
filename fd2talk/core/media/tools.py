"""ffmpeg and ffprobe as processes: where they are, ffmpeg command lines compiled from
ffmpeg-python graphs, and runs with a timeout that keep the tool's stderr.

Command lines are built with ffmpeg-python's graph API (`ffmpeg.input(...)`, `.filter(...)`,
`ffmpeg.output(...)`) and compiled by `command`; they run through `run_tool` (or a pipe with
a kill timer, `read.iter_frames`), never through ffmpeg-python's own `run`, which has no
timeout. So every call has a timeout, and a failure keeps the tool's stderr for
`failures.jsonl`.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from fd2talk.core.skip import PrepError, Skip, SkipReason


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
