"""Face detection pass of the `crop` stage: sparse, downscaled, keyframe-only decoding.

Frames are decoded at a reduced size (long side `detect_size`) and the detector
runs every `detect_every` frames and on the last one. When the clip says where
its keyframes are (the `clip` stage writes one every 5 frames), only those frames
are decoded (`ffmpeg -skip_frame nokey`); the frames of a gap are decoded (by an
exact seek) and detected only when the detections on its two sides disagree: the
number of faces changes, a face moved (IoU below `refine_iou`), or a tube would
end or start there. Both paths make the same detector calls on the same pixels,
so they give the same tubes. See `crop.py` for what this can miss.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fd2talk.core import media
from fd2talk.core.schema import FPS
from fd2talk.core.skip import Skip, SkipReason
from fd2talk.pipeline.stages.tubes import Box, Tube, TubeBuilder, iou


class ScanSettings(Protocol):
    """The detection settings the scan reads (the crop stage's `CropConfig` has them all)."""

    @property
    def detect_size(self) -> int: ...  # long side of the frames fed to the detector; 0: full

    @property
    def detect_every(self) -> int: ...  # detect every n-th frame (+ the last; + gaps)

    @property
    def refine_iou(self) -> float: ...  # fill a gap when a face's boxes overlap less

    @property
    def iou_with_initial(self) -> float: ...  # a tube goes on while IoU(first box) > it

    @property
    def timeout(self) -> float: ...  # seconds for the decoding


def detect_dims(width: int, height: int, detect_size: int) -> tuple[int, int]:
    """Size of the frames fed to the detector: long side `detect_size` (never upscaled), even."""
    if detect_size <= 0 or max(width, height) <= detect_size:
        return width, height
    s = detect_size / max(width, height)
    return max(2, 2 * round(width * s / 2)), max(2, 2 * round(height * s / 2))


@dataclass(frozen=True)
class Keyframes:
    """Where a clip's keyframes are, as its json says (clip stage: every `keyint` frames + the last)."""

    frames: int  # frames in the clip
    keyint: int  # frames 0, keyint, 2 keyint, ... are keyframes
    last: bool  # the last frame is a keyframe too
    fps: float = FPS

    @classmethod
    def of_clip(cls, meta: dict) -> Keyframes | None:
        """From a clip's json; None when it does not say (clips of an older version)."""
        if not meta.get("keyint") or not meta.get("frames"):
            return None
        return cls(
            int(meta["frames"]),
            int(meta["keyint"]),
            bool(meta.get("last_keyframe")),
            float(meta.get("fps") or FPS),
        )

    def indices(self) -> list[int]:
        """The keyframes' frame numbers, increasing."""
        out = list(range(0, self.frames, self.keyint))
        if self.last and out[-1] != self.frames - 1:
            out.append(self.frames - 1)
        return out


@dataclass
class Scan:
    """What the detection pass found in one clip (boxes in clip pixels)."""

    tubes: list[Tube]
    frames: int  # frames in the clip
    detected: int  # frames the detector ran on
    width: int
    height: int
    read: int = 0  # frames decoded for the detector (all of them when streaming)
    keyframes: bool = False  # True: only keyframes and the gaps to fill were decoded


def _needs_refine(
    prev: Sequence[Box], boxes: Sequence[Box], builder: TubeBuilder, refine_iou: float
) -> bool:
    """Do the detections on the two sides of a gap disagree (so the gap must be detected)?"""
    if len(prev) != len(boxes) or builder.would_change(boxes):
        return True
    for a_set, b_set in ((prev, boxes), (boxes, prev)):
        for a in a_set:
            if max(iou(a, b) for b in b_set) < refine_iou:
                return True
    return False


Gap = Callable[[], Iterable[tuple[int, np.ndarray]]]  # () -> the gap's (frame number, frame)s


class _Scanner:
    """Sparse detection with gap filling, fed by either decoding path in the same order.

    Both paths make the same detector calls on the same pixels in the same order,
    so they build the same tubes.
    """

    def __init__(
        self, config: ScanSettings, detect: Callable[[np.ndarray], list], sx: float, sy: float
    ):
        self.config = config
        self.builder = TubeBuilder(config.iou_with_initial)
        self._detect = detect
        self._sx, self._sy = sx, sy
        self.detected = 0
        self.read = 0
        self._prev: list[Box] | None = None

    def run(self, frame: np.ndarray) -> list[Box]:
        self.detected += 1
        sx, sy = self._sx, self._sy
        return [(d[0] * sx, d[1] * sy, d[2] * sx, d[3] * sy) for d in self._detect(frame)]

    def detect_at(self, i: int, frame: np.ndarray, gap: Gap) -> None:
        """Detect frame `i`; when it disagrees with the last detected frame, the gap too."""
        boxes = self.run(frame)
        prev = self._prev
        if (
            prev is not None
            and i > self.builder.last_frame + 1
            and _needs_refine(prev, boxes, self.builder, self.config.refine_iou)
        ):
            for j, f in gap():
                self.builder.update(j, self.run(f))
        self.builder.update(i, boxes)
        self._prev = boxes


class _NotAsSaid(Exception):
    """The clip's keyframes are not where its json says (the caller decodes every frame)."""


def _scan_streaming(
    path: Path, dw: int, dh: int, every: int, scanner: _Scanner, timeout: float
) -> int:
    """Decode every frame once; frames between detections wait in a buffer. Returns the count."""
    buffer: list[tuple[int, np.ndarray]] = []  # frames since the last detected one
    n_frames = 0
    for i, frame in enumerate(media.iter_frames(path, dw, dh, timeout)):
        n_frames = i + 1
        if i % every == 0:
            scanner.detect_at(i, frame, lambda: buffer)
            buffer.clear()
        else:
            buffer.append((i, frame))
    if buffer:  # the last frame is always detected
        i, frame = buffer.pop()
        scanner.detect_at(i, frame, lambda: buffer)
    scanner.read = n_frames
    return n_frames


def _scan_keyframes(
    path: Path,
    dw: int,
    dh: int,
    every: int,
    keyframes: Keyframes,
    scanner: _Scanner,
    timeout: float,
) -> None:
    """Decode only the keyframes (every `every`-th frame is one), plus the gaps to fill.

    A gap (and the last frame, when it is no keyframe) is decoded by an exact
    seek: ffmpeg decodes from the keyframe before it and drops what precedes it.
    Raises `_NotAsSaid` when the keyframes are not where `keyframes` says.
    """
    deadline = time.monotonic() + timeout
    last = keyframes.frames - 1
    indices = keyframes.indices()
    wanted = set(range(0, keyframes.frames, every)) | {last}

    def remaining() -> float:  # what is left of `timeout`: a seek never extends it
        left = deadline - time.monotonic()
        if left <= 0:
            raise Skip(
                SkipReason.TIMEOUT, f"decoding {path} for detection ran past {timeout:.0f} s"
            )
        return left

    def seek(first: int, n: int) -> list[tuple[int, np.ndarray]]:  # frames [first, first + n)
        start = f"{(first - 0.5) / keyframes.fps:.6f}"  # half a frame early: no rounding issue
        frames = list(
            media.iter_frames(
                path,
                dw,
                dh,
                remaining(),
                input_kwargs={"ss": start},
                output_kwargs={"frames:v": n, "fps_mode": "passthrough"},
            )
        )
        if len(frames) != n:
            raise _NotAsSaid(f"seeking to frame {first} gave {len(frames)} of {n} frames")
        scanner.read += n
        return list(zip(range(first, first + n), frames, strict=True))

    def gap(i: int) -> Gap:  # the frames between the last detected one and `i`
        first = scanner.builder.last_frame + 1
        return lambda: seek(first, i - first)

    stream = media.iter_frames(
        path,
        dw,
        dh,
        remaining(),
        input_kwargs={"skip_frame": "nokey"},
        output_kwargs={"fps_mode": "passthrough"},
    )
    n = 0
    with contextlib.closing(stream):
        for n, frame in enumerate(stream, 1):
            if n > len(indices):
                raise _NotAsSaid(f"more than the {len(indices)} keyframes expected")
            scanner.read += 1
            i = indices[n - 1]
            if i in wanted:
                scanner.detect_at(i, frame, gap(i))
    if n != len(indices):
        raise _NotAsSaid(f"{n} keyframes, {len(indices)} expected")
    if indices[-1] != last:  # the last frame is always detected
        ((i, frame),) = seek(last, 1)
        scanner.detect_at(i, frame, gap(i))


def scan_faces(
    path: Path,
    width: int,
    height: int,
    config: ScanSettings,
    detect: Callable[[np.ndarray], list],
    *,
    keyframes: Keyframes | None = None,
) -> Scan:
    """Decode `path` (downscaled), detect sparsely, build the face tubes.

    `detect(frame)` returns `[(x0, y0, x1, y1, score), ...]` in the frame's pixels.
    With `keyframes` (from the clip's json) and `detect_every` a multiple of its
    interval, only the keyframes and the gaps that must be filled are decoded;
    otherwise (or when the keyframes are not where it says) every frame is, once,
    streaming. Both give the same tubes. Memory is bounded by `detect_every`
    downscaled frames.
    """
    dw, dh = detect_dims(width, height, config.detect_size)
    sx, sy = width / dw, height / dh
    every = max(1, config.detect_every)
    if keyframes is not None and keyframes.frames > 0 and every % keyframes.keyint == 0:
        scanner = _Scanner(config, detect, sx, sy)
        try:
            _scan_keyframes(path, dw, dh, every, keyframes, scanner, config.timeout)
        except _NotAsSaid:
            pass
        else:
            return Scan(
                scanner.builder.tubes(),
                keyframes.frames,
                scanner.detected,
                width,
                height,
                scanner.read,
                keyframes=True,
            )
    scanner = _Scanner(config, detect, sx, sy)
    n_frames = _scan_streaming(path, dw, dh, every, scanner, config.timeout)
    return Scan(scanner.builder.tubes(), n_frames, scanner.detected, width, height, scanner.read)
