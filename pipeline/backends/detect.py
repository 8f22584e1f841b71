"""Face detectors for the `crop` stage, behind one interface (DESIGN.md sections 2, 4, 6).

    detector.detect(frame)  # frame: (H, W, 3) uint8 RGB -> [(x0, y0, x1, y1, score), ...]

Boxes are in the given frame's pixels. Two backends:

- `mediapipe` (offline default): MediaPipe's BlazeFace short-range detector, the
  `face_detector.tflite` inside `face_landmarker.task`, read from the bundle into
  memory. BlazeFace's box runs from the brows to the chin; it is widened to the
  whole face (the extent of MediaPipe's 478 landmarks, forehead included) by
  `MEDIAPIPE_BOX_TO_FACE`, so that FOMM's 0.1 enlargement leaves a margin around
  the face as it does with S3FD's boxes.
- `s3fd` (the paper's pipeline, via first-order-model): the face-alignment
  library's own S3FD detector (network, decoding, NMS), given the published state
  dict `s3fd-619a316812.pth` from a local path (`--s3fd-weights` or
  $FD2TALK_S3FD_WEIGHTS) as its `path_to_detector`, so it never downloads.

Use a detector as a context manager (or call `close()`): MediaPipe objects that
are not closed print tracebacks at interpreter exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from fd2talk.core.device import resolve_device
from fd2talk.core.quiet import native_stderr_silenced
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends import weights
from fd2talk.pipeline.backends.weights import local_weight

Detection = tuple[float, float, float, float, float]  # x0, y0, x1, y1, score
DETECTORS = ("mediapipe", "s3fd")

MIN_SCORE = 0.5  # both backends keep detections scoring above this (face-alignment's 0.5)
MEDIAPIPE_MEMBER = "face_detector.tflite"
# BlazeFace box -> whole-face box, as fractions of the box's width/height added to
# (left, top, right, bottom). Measured on 415 frames (the three shared talking clips,
# six face photos): the 478 landmarks stick out of the BlazeFace box by at most
# 2% left/right, 16% at the top (forehead) and 4% at the bottom (chin).
MEDIAPIPE_BOX_TO_FACE = (0.03, 0.20, 0.03, 0.05)

S3FD_FILE = "s3fd-619a316812.pth"
S3FD_ENV = "FD2TALK_S3FD_WEIGHTS"
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"


class ClosedOnExit:
    """`with obj:` closes it at the end (subclasses define `close`)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]: ...

    def close(self) -> None: ...


class MediaPipeDetector(ClosedOnExit):
    """BlazeFace (short range) from `face_landmarker.task`; CPU, about 3 ms a frame."""

    name = "mediapipe"

    def __init__(self, face_model: str | Path | None = None, min_score: float = MIN_SCORE):
        from mediapipe.tasks.python import BaseOptions, vision

        task = weights.face_model_path(face_model)
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(
                model_asset_buffer=weights.task_member(task, MEDIAPIPE_MEMBER)
            ),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
        )
        self._detector = None
        try:
            with native_stderr_silenced():
                self._detector = vision.FaceDetector.create_from_options(options)
        except (RuntimeError, ValueError, OSError, IndexError) as e:  # MediaPipe refuses it
            raise weights.model_load_error(task, f"face detector ({MEDIAPIPE_MEMBER})", e) from None
        self._first = True  # the first inference logs too

    def detect(self, frame: np.ndarray) -> list[Detection]:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        if self._first:
            self._first = False
            with native_stderr_silenced():
                result = self._detector.detect(image)
        else:
            result = self._detector.detect(image)
        out = []
        for d in result.detections:
            b = d.bounding_box
            bw, bh = float(b.width), float(b.height)
            el, et, er, eb = MEDIAPIPE_BOX_TO_FACE
            out.append(
                (
                    b.origin_x - el * bw,
                    b.origin_y - et * bh,
                    b.origin_x + (1 + er) * bw,
                    b.origin_y + (1 + eb) * bh,
                    float(d.categories[0].score),
                )
            )
        return out

    def close(self) -> None:
        if self._detector is not None:
            with native_stderr_silenced():
                self._detector.close()
            self._detector = None


def s3fd_weights_path(flag: str | Path | None = None) -> Path:
    """Resolve S3FD's weights: `flag`, else $FD2TALK_S3FD_WEIGHTS; a missing file is a PrepError."""
    return local_weight(
        flag,
        flag_name="--s3fd-weights PATH",
        env=S3FD_ENV,
        name=f"S3FD weights {S3FD_FILE}",
        hint=f"download {S3FD_FILE} from {S3FD_URL}, face-alignment's published S3FD weights "
        "(github.com/1adrianb/face-alignment fetches it on first use), and give its path",
        alternative="--detector mediapipe",
    )


class S3FDDetector(ClosedOnExit):
    """face-alignment's S3FD (its own network and decoding) from a local state dict, on CUDA
    when present."""

    name = "s3fd"

    def __init__(
        self,
        weights_path: str | Path | None = None,
        device: str = "auto",
        min_score: float = MIN_SCORE,
    ):
        path = s3fd_weights_path(weights_path)
        self.device = resolve_device(device)
        self.min_score = min_score
        self._detector = load_s3fd(path, self.device, min_score)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        boxes = self._detector.detect_from_image(np.ascontiguousarray(frame))  # RGB in
        return [tuple(float(v) for v in b[:5]) for b in boxes]

    def close(self) -> None:
        self._detector = None


def load_errors() -> tuple[type[BaseException], ...]:
    """What `torch.load` + `load_state_dict` raise on a file that is no such state dict
    (garbage, truncated, another network's), so it becomes a PrepError naming the file."""
    import pickle
    import struct
    import zipfile

    return (
        RuntimeError,
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        AttributeError,
        ValueError,
        TypeError,
        struct.error,
        zipfile.BadZipFile,
    )


def check_state_dict(path: Path, net, name: str, url: str) -> None:
    """`path` loads (on the CPU) into `net` (face-alignment's class for it), else a PrepError
    naming the file and where to get the right one. Checked before the library builds its
    model, so that errors of the device (CUDA memory, no driver) are not blamed on the file."""
    import torch

    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (*load_errors(), OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PrepError(
            f"{path} is not face-alignment's {name}: {first[:300]}; get it from {url}"
        ) from None


def load_s3fd(path: Path, device: str, min_score: float = MIN_SCORE):
    """face-alignment's `SFDDetector` with the state dict at `path` (never its download); a file
    that is no S3FD state dict is a PrepError naming it and where to get the right one."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    check_state_dict(path, s3fd(), f"S3FD state dict ({S3FD_FILE})", S3FD_URL)
    return SFDDetector(device, path_to_detector=str(path), filter_threshold=min_score)


def check_detector(
    name: str, face_model: str | Path | None = None, s3fd_weights: str | Path | None = None
) -> None:
    """Fail fast (PrepError) on an unknown backend or a missing weight file; loads nothing."""
    if name not in DETECTORS:
        raise PrepError(f"unknown detector {name!r}; choose one of {DETECTORS}")
    if name == "mediapipe":
        weights.face_model_path(face_model)
    else:
        s3fd_weights_path(s3fd_weights)


def make_detector(
    name: str,
    face_model: str | Path | None = None,
    s3fd_weights: str | Path | None = None,
    device: str = "auto",
) -> Detector:
    """Build the named backend; an unknown name or a missing weight file is a PrepError."""
    check_detector(name, face_model, s3fd_weights)
    if name == "mediapipe":
        return MediaPipeDetector(face_model)
    return S3FDDetector(s3fd_weights, device)
