"""Encoder settings shared by every stage that writes video, as dicts of ffmpeg output
options given to `ffmpeg.output` as keywords (`X264`, `AAC`, `BITEXACT`).

They give deterministic bytes (bitexact muxing; x264's frame threading gave different bytes
run to run here, its sliced threading with a fixed thread count does not), so a resumed run
equals an uninterrupted one.
"""

from __future__ import annotations

from fd2talk.core.schema import FPS, SAMPLE_RATE

AV_TOLERANCE = 1.5 / FPS  # seconds an encoded AAC track may differ from its video (framing)
X264_PARAMS = "sliced-threads=1"
X264 = {
    "c:v": "libx264",
    "preset": "veryfast",
    "crf": 18,
    "pix_fmt": "yuv420p",
    "threads": 2,
    "x264-params": X264_PARAMS,
}
AAC = {"c:a": "aac", "b:a": "96k", "ac": 1, "ar": SAMPLE_RATE}
BITEXACT = {
    "map_metadata": -1,
    "fflags": "+bitexact",
    "flags:v": "+bitexact",
    "flags:a": "+bitexact",
}


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
