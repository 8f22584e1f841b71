"""Silence MediaPipe's native (C++) start-up logging.

MediaPipe/LiteRT print INFO and W lines straight to file descriptor 2 when a
model is built and on its first inference (env vars such as GLOG_minloglevel do
not reach them here). With one landmarker per clip that is several lines per
clip over the progress bar. This redirects fd 2 to /dev/null for just those
calls; Python exceptions still carry their messages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    if os.environ.get("FD2TALK_NATIVE_LOGS"):  # set it to see them, e.g. when debugging
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
