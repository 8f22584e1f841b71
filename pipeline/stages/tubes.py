"""Face tubes: the first-order-model crop algorithm (FOMM `crop-video.py`) as pure functions.

DESIGN.md section 2, `crop`. Per-frame face boxes become tubes:

1. A tube starts at a box that matches no running tube; its INITIAL box is kept fixed.
2. At each detected frame, a running tube survives only if some box has IoU with
   the tube's initial box above `iou_with_initial` (0.25); otherwise it ends.
3. Each box joins the surviving tube whose initial box it overlaps most (IoU above
   the threshold), or starts a new tube.
4. A tube's box is the union (bounding box) of all its boxes.
5. The crop box: the union box enlarged by `increase` (0.1) with FOMM's
   aspect-preserving formula, made square, then fitted into the frame.

Departures from FOMM (on purpose):
- FOMM clips the enlarged box to the frame and lets ffmpeg's scale stretch the
  non-square result; here the square is SHIFTED inside the frame so it stays
  square, and shrunk (about its centre) only when it is larger than the frame.
- Box corners are even integers (yuv420p crops snap to even offsets, so the
  crop ffmpeg makes is exactly the box we record); the side gets 2 px of slack
  so the rounded square still holds the enlarged box.
- IoU uses continuous coordinates (FOMM adds 1 pixel to widths).
- A tube covers frames [start, end] inclusive (FOMM cuts end - start frames) and
  is kept when it has at least `min_frames` frames.
- Detections may be sparse (not every frame): `TubeBuilder.update` takes the
  frames in increasing order with gaps; `would_change` tells the caller (the crop
  stage) when a gap must be filled in because a tube would end or start there.

Boxes are `(x0, y0, x1, y1)` floats in pixels, x to the right, y down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1)

IOU_WITH_INITIAL = 0.25  # FOMM --iou_with_initial
INCREASE = 0.1  # FOMM --increase


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def join(a: Sequence[float], b: Sequence[float]) -> Box:
    """The smallest box holding both `a` and `b` (FOMM `join`)."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


@dataclass
class Tube:
    """One face track: frames [start, end] (inclusive) and its detected boxes."""

    initial: Box  # the first box: every later box is compared with it
    start: int
    end: int
    box: Box  # union of all boxes so far
    boxes: dict[int, Box] = field(default_factory=dict)  # frame -> detected box

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def add(self, frame: int, box: Box) -> None:
        self.end = frame
        self.box = join(self.box, box)
        # FOMM lets two boxes of one frame join one tube; the union takes both,
        # the per-frame record keeps their union too.
        self.boxes[frame] = join(self.boxes[frame], box) if frame in self.boxes else box


class TubeBuilder:
    """FOMM's per-frame tube loop, fed one detected frame at a time (in increasing order)."""

    def __init__(self, iou_with_initial: float = IOU_WITH_INITIAL):
        self.threshold = iou_with_initial
        self.running: list[Tube] = []
        self.finished: list[Tube] = []
        self.last_frame = -1

    def _survivors(self, boxes: Sequence[Box]) -> list[bool]:
        return [any(iou(t.initial, b) > self.threshold for b in boxes) for t in self.running]

    def _best_tube(self, box: Box, tubes: Sequence[Tube]) -> Tube | None:
        best, best_iou = None, 0.0
        for t in tubes:
            v = iou(t.initial, box)
            if v > self.threshold and v > best_iou:
                best, best_iou = t, v
        return best

    def would_change(self, boxes: Sequence[Box]) -> bool:
        """True when these boxes would end a running tube or start a new one."""
        alive = self._survivors(boxes)
        if not all(alive):
            return True
        return any(self._best_tube(b, self.running) is None for b in boxes)

    def update(self, frame: int, boxes: Sequence[Box]) -> None:
        """Add the boxes detected on `frame` (frames must increase)."""
        if frame <= self.last_frame:
            raise ValueError(f"frame {frame} after frame {self.last_frame}: frames must increase")
        self.last_frame = frame
        alive = self._survivors(boxes)
        self.finished += [t for t, ok in zip(self.running, alive, strict=True) if not ok]
        self.running = [t for t, ok in zip(self.running, alive, strict=True) if ok]
        for b in boxes:
            b = tuple(float(v) for v in b[:4])
            tube = self._best_tube(b, self.running)
            if tube is None:
                self.running.append(
                    Tube(initial=b, start=frame, end=frame, box=b, boxes={frame: b})
                )
            else:
                tube.add(frame, b)

    def tubes(self) -> list[Tube]:
        """Every tube so far (finished and running), in order of their start."""
        return sorted(self.finished + self.running, key=lambda t: t.start)


def long_tubes(tubes: Sequence[Tube], min_frames: int) -> list[Tube]:
    """The tubes with at least `min_frames` frames."""
    return [t for t in tubes if t.length >= min_frames]


def enlarge(box: Sequence[float], increase: float = INCREASE) -> Box:
    """FOMM's aspect-preserving enlargement: grow each side by at least `increase`.

    The shorter side grows more, so the result is square whenever the box is not
    too elongated: width_increase = max(inc, ((1 + 2 inc) h - w) / 2w), likewise h.
    """
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    wi = max(increase, ((1 + 2 * increase) * h - w) / (2 * w))
    hi = max(increase, ((1 + 2 * increase) * w - h) / (2 * h))
    return (x0 - wi * w, y0 - hi * h, x1 + wi * w, y1 + hi * h)


def _even_floor(v: float) -> int:
    return 2 * math.floor(v / 2)


def _even_round(v: float) -> int:
    return 2 * math.floor(v / 2 + 0.5)


def square_in_frame(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The square around `box`'s centre with side max(w, h), moved (not cut) into the frame.

    Returns integer (x0, y0, x1, y1) with even corners; the side has 2 px of slack
    so that the even-rounded square still holds `box`. The side is shrunk only
    when it exceeds the frame's shorter side. FOMM instead clips to the frame and
    lets the scale to 256x256 stretch the face.
    """
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = 2 * math.ceil(max(x1 - x0, y1 - y0) / 2) + 2
    side = max(2, min(side, _even_floor(min(width, height))))
    left = _even_floor(min(max(_even_round(cx - side / 2), 0), width - side))
    top = _even_floor(min(max(_even_round(cy - side / 2), 0), height - side))
    return (left, top, left + side, top + side)


def crop_box(
    tube_box: Sequence[float], width: int, height: int, increase: float = INCREASE
) -> tuple[int, int, int, int]:
    """Tube union box -> the square crop in a `width` x `height` frame (steps 5 above)."""
    return square_in_frame(enlarge(tube_box, increase), width, height)
