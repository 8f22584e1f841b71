"""Face detectors for the `crop` stage, behind one interface (DESIGN.md sections 2, 4, 6).

    detector.detect(frame)  # frame: (H, W, 3) uint8 RGB -> [(x0, y0, x1, y1, score), ...]

Boxes are in the given frame's pixels. Two backends:

- `mediapipe` (offline default): MediaPipe's BlazeFace short-range detector, the
  `face_detector.tflite` inside `face_landmarker.task`, read from the bundle into
  memory. BlazeFace's box runs from the brows to the chin; it is widened to the
  whole face (the extent of MediaPipe's 478 landmarks, forehead included) by
  `MEDIAPIPE_BOX_TO_FACE`, so that FOMM's 0.1 enlargement leaves a margin around
  the face as it does with S3FD's boxes.
- `s3fd` (the paper's pipeline, via first-order-model): face-alignment's S3FD
  network, loading the published state dict `s3fd-619a316812.pth` from a local
  path (`--s3fd-weights` or $FD2TALK_S3FD_WEIGHTS); nothing is downloaded. The
  network definition and its pre/post-processing are vendored from
  face-alignment (https://github.com/1adrianb/face-alignment, BSD-3-Clause:
  face_alignment/detection/sfd/net_s3fd.py, detect.py, bbox.py, sfd_detector.py),
  with the same parameter names so the published weights load unchanged.

Use a detector as a context manager (or call `close()`): MediaPipe objects that
are not closed print tracebacks at interpreter exit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Protocol

import numpy as np

from fd2talk.model.device import resolve_device

from . import weights
from .quiet import native_stderr_silenced
from .skip import PrepError
from .weights import local_weight

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
S3FD_MEAN_BGR = (104.0, 117.0, 123.0)  # the network takes BGR minus this mean
S3FD_PRE_SCORE = 0.05  # anchors scoring below this are not decoded
S3FD_NMS_IOU = 0.3
S3FD_VARIANCES = (0.1, 0.2)  # SSD box-coding variances (centre, size)


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]: ...

    def close(self) -> None: ...




class MediaPipeDetector:
    """BlazeFace (short range) from `face_landmarker.task`; CPU, about 3 ms a frame."""

    name = "mediapipe"

    def __init__(self, face_model: str | Path | None = None, min_score: float = MIN_SCORE):
        from mediapipe.tasks.python import BaseOptions, vision

        task = weights.face_model_path(face_model)
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=weights.task_member(task,
                                                                            MEDIAPIPE_MEMBER)),
            running_mode=vision.RunningMode.IMAGE, min_detection_confidence=min_score)
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
            out.append((b.origin_x - el * bw, b.origin_y - et * bh,
                        b.origin_x + (1 + er) * bw, b.origin_y + (1 + eb) * bh,
                        float(d.categories[0].score)))
        return out

    def close(self) -> None:
        if self._detector is not None:
            with native_stderr_silenced():
                self._detector.close()
            self._detector = None

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def s3fd_weights_path(flag: str | Path | None = None) -> Path:
    """Resolve S3FD's weights: `flag`, else $FD2TALK_S3FD_WEIGHTS; a missing file is a PrepError."""
    return local_weight(
        flag, flag_name="--s3fd-weights PATH", env=S3FD_ENV, name=f"S3FD weights {S3FD_FILE}",
        hint=f"download {S3FD_FILE} from {S3FD_URL}, face-alignment's published S3FD weights "
        "(github.com/1adrianb/face-alignment fetches it on first use), and give its path",
        alternative="--detector mediapipe")


# S3FD = VGG-16 body + extra layers; (name, in, out, kernel, stride, padding); "pool" = 2x2 max.
_S3FD_BODY = (
    ("conv1_1", 3, 64, 3, 1, 1), ("conv1_2", 64, 64, 3, 1, 1), "pool",
    ("conv2_1", 64, 128, 3, 1, 1), ("conv2_2", 128, 128, 3, 1, 1), "pool",
    ("conv3_1", 128, 256, 3, 1, 1), ("conv3_2", 256, 256, 3, 1, 1),
    ("conv3_3", 256, 256, 3, 1, 1), "pool",
    ("conv4_1", 256, 512, 3, 1, 1), ("conv4_2", 512, 512, 3, 1, 1),
    ("conv4_3", 512, 512, 3, 1, 1), "pool",
    ("conv5_1", 512, 512, 3, 1, 1), ("conv5_2", 512, 512, 3, 1, 1),
    ("conv5_3", 512, 512, 3, 1, 1), "pool",
    ("fc6", 512, 1024, 3, 1, 3), ("fc7", 1024, 1024, 1, 1, 0),
    ("conv6_1", 1024, 256, 1, 1, 0), ("conv6_2", 256, 512, 3, 2, 1),
    ("conv7_1", 512, 128, 1, 1, 0), ("conv7_2", 128, 256, 3, 2, 1),
)
# The six detection sources, strides 4..128: (feature, channels, L2-norm scale or None, classes).
_S3FD_HEADS = (
    ("conv3_3", 256, 10.0, 4),  # 4 classes: 3 background scores max-pooled into one
    ("conv4_3", 512, 8.0, 2), ("conv5_3", 512, 5.0, 2),
    ("fc7", 1024, None, 2), ("conv6_2", 512, None, 2), ("conv7_2", 256, None, 2),
)


@functools.cache
def s3fd_class() -> type:
    """The S3FD network class (defined on first use so that torch loads only when needed)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    class L2Norm(nn.Module):
        """Channel-wise L2 normalisation with a learned per-channel scale."""

        def __init__(self, channels: int, scale: float):
            super().__init__()
            self.weight = nn.Parameter(torch.full((channels,), scale))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
            norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
            return x / norm * self.weight.view(1, -1, 1, 1)

    class S3FD(nn.Module):
        """Single Shot Scale-invariant Face Detector (Zhang et al. 2017), face-alignment layout."""

        def __init__(self):
            super().__init__()
            for layer in _S3FD_BODY:
                if layer != "pool":
                    name, cin, cout, k, s, p = layer
                    setattr(self, name, nn.Conv2d(cin, cout, k, s, p))
            for feat, ch, scale, classes in _S3FD_HEADS:
                src = f"{feat}_norm" if scale is not None else feat
                if scale is not None:
                    setattr(self, src, L2Norm(ch, scale))
                setattr(self, f"{src}_mbox_conf", nn.Conv2d(ch, classes, 3, 1, 1))
                setattr(self, f"{src}_mbox_loc", nn.Conv2d(ch, 4, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            """x: (B, 3, H, W) BGR minus mean -> [cls1, loc1, ..., cls6, loc6];
            cls_i: (B, 2, H/s_i, W/s_i) logits, loc_i: (B, 4, H/s_i, W/s_i), s_i = 4..128."""
            feats = {}
            h = x
            for layer in _S3FD_BODY:
                if layer == "pool":
                    h = F.max_pool2d(h, 2, 2)
                else:
                    h = F.relu(getattr(self, layer[0])(h))
                    feats[layer[0]] = h
            out = []
            for feat, _, scale, classes in _S3FD_HEADS:
                f = feats[feat]
                src = f"{feat}_norm" if scale is not None else feat
                if scale is not None:
                    f = getattr(self, src)(f)
                cls = getattr(self, f"{src}_mbox_conf")(f)
                if classes == 4:  # max-out background label
                    c = torch.chunk(cls, 4, 1)
                    cls = torch.cat([torch.max(torch.max(c[0], c[1]), c[2]), c[3]], dim=1)
                out += [cls, getattr(self, f"{src}_mbox_loc")(f)]
            return out

    return S3FD


def nms(dets: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression of (N, 5) [x0, y0, x1, y1, score] (face-alignment's)."""
    x0, y0, x1, y1, scores = dets.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[order[1:]]) - np.maximum(x0[i], x0[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[order[1:]]) - np.maximum(y0[i], y0[order[1:]]) + 1)
        overlap = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[1:][overlap <= iou_threshold]
    return keep


def decode_s3fd(outputs: list, min_score: float = MIN_SCORE) -> list[Detection]:
    """S3FD's outputs for ONE image -> boxes after NMS (face-alignment's get_predictions)."""
    import torch

    rows = []
    var_c, var_s = S3FD_VARIANCES
    for level in range(len(outputs) // 2):
        cls = torch.softmax(outputs[2 * level].float(), dim=1)[0, 1].cpu().numpy()  # (H, W)
        loc = outputs[2 * level + 1].float()[0].cpu().numpy()  # (4, H, W)
        stride = 2 ** (level + 2)  # 4, 8, ..., 128
        anchor = 4.0 * stride  # square anchor side
        ys, xs = np.nonzero(cls > S3FD_PRE_SCORE)
        if ys.size == 0:
            continue
        cx = stride / 2 + xs * stride + loc[0, ys, xs] * var_c * anchor
        cy = stride / 2 + ys * stride + loc[1, ys, xs] * var_c * anchor
        w = anchor * np.exp(loc[2, ys, xs] * var_s)
        h = anchor * np.exp(loc[3, ys, xs] * var_s)
        rows.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, cls[ys, xs]], 1))
    if not rows:
        return []
    dets = np.concatenate(rows).astype(np.float64)  # (N, 5)
    dets = dets[nms(dets, S3FD_NMS_IOU)]
    return [tuple(float(v) for v in d) for d in dets if d[4] > min_score]


class S3FDDetector:
    """face-alignment's S3FD from a local state dict, on CUDA when present."""

    name = "s3fd"

    def __init__(self, weights_path: str | Path | None = None, device: str = "auto",
                 min_score: float = MIN_SCORE):
        import torch

        path = s3fd_weights_path(weights_path)
        self.device = resolve_device(device)
        self.min_score = min_score
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = s3fd_class()()
        missing, unexpected = set(net.state_dict()) - set(state), set(state) - set(net.state_dict())
        if missing or unexpected:
            raise PrepError(
                f"{path} is not face-alignment's S3FD state dict ({S3FD_FILE}): missing "
                f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; get it from {S3FD_URL}")
        net.load_state_dict(state)
        self.net = net.to(self.device).eval()
        self._mean = torch.tensor(S3FD_MEAN_BGR, device=self.device).view(1, 3, 1, 1)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)  # (H, W, 3) RGB
        x = x.permute(2, 0, 1)[None].flip(1).float() - self._mean  # (1, 3, H, W) BGR - mean
        with torch.inference_mode():
            outputs = self.net(x)
        return decode_s3fd(outputs, self.min_score)

    def close(self) -> None:
        pass

    def __enter__(self) -> S3FDDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_detector(name: str, face_model: str | Path | None = None,
                   s3fd_weights: str | Path | None = None) -> None:
    """Fail fast (PrepError) on an unknown backend or a missing weight file; loads nothing."""
    if name not in DETECTORS:
        raise PrepError(f"unknown detector {name!r}; choose one of {DETECTORS}")
    if name == "mediapipe":
        weights.face_model_path(face_model)
    else:
        s3fd_weights_path(s3fd_weights)


def make_detector(name: str, face_model: str | Path | None = None,
                  s3fd_weights: str | Path | None = None, device: str = "auto") -> Detector:
    """Build the named backend; an unknown name or a missing weight file is a PrepError."""
    check_detector(name, face_model, s3fd_weights)
    if name == "mediapipe":
        return MediaPipeDetector(face_model)
    return S3FDDetector(s3fd_weights, device)
