"""How a demo face moves (DESIGN.md section 6): a mouth driven frame by frame by the speech,
and slow head motion.

- The mouth opening at time t is the speech level (Hann-weighted RMS over 2/25 s around t,
  in dB against the clip's 95th percentile, `RANGE_DB` mapped to [0, 1]); frame i shows the
  opening at its mid-time (i + 0.5) / fps.
- The mouth is a jaw drop that MediaPipe FaceLandmarker reads as `jawOpen`: the lower face
  below the inner-lip line moves down (a lens-shaped profile between the mouth corners
  blending into the whole jaw width, fading out under the chin), the upper lip rises a
  little, the mouth corners sag, and the gap between the lips is painted as a dark mouth
  cavity with a tongue. Each image column's forward displacement is inverted exactly (it is
  monotone on either side of the lip line).
- The head: a smooth small rotation about the nose, translation and scale (two sines per
  axis), then the video's framing.
"""

from __future__ import annotations

import numpy as np

from fd2talk.core.schema import FPS
from fd2talk.model.demo.portraits import Face
from fd2talk.model.demo.variants import Variant

# Speech envelope -> mouth opening.
ENVELOPE_WINDOW = 2 / FPS  # seconds: Hann window around each frame's mid-time
RANGE_DB = 36.0  # levels from (95th percentile - RANGE_DB) to the 95th percentile map to 0..1


def mouth_opening(audio: np.ndarray, sample_rate: int, times: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] at `times` (s) from the speech level of (n,) `audio`: (T,) float32.

    The 0 dB reference is the 95th percentile of the level on the 25 fps grid, so the
    same audio gives the same function of time whatever frame rate samples it.
    """
    x = np.asarray(audio, np.float64)
    half = int(ENVELOPE_WINDOW * sample_rate / 2)
    w = np.hanning(2 * half + 1)
    power = np.convolve(np.pad(x * x, half), w / w.sum(), mode="valid")  # (n,) centred

    def level(ts: np.ndarray) -> np.ndarray:
        idx = np.clip(np.round(ts * sample_rate).astype(int), 0, len(x) - 1)
        return 10 * np.log10(power[idx] + 1e-10)

    grid = (np.arange(max(1, round(len(x) / sample_rate * FPS))) + 0.5) / FPS
    ref = np.percentile(level(grid), 95)
    return np.clip((level(np.asarray(times)) - ref + RANGE_DB) / RANGE_DB, 0, 1).astype(np.float32)


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    return (np.arange(n_frames) + 0.5) / fps  # each frame shows its mid-time


# Jaw-drop warp (lengths relative to the inter-ocular distance `iod` or the mouth-chin span).
MAX_DROP = 0.42  # jaw drop at opening 1, x iod (jawOpen ~0.55 there)
UPPER_LIP_RISE = 0.15  # the upper lip rises by this fraction of the drop
CORNER_SAG = 0.35  # the mouth corners move down by this fraction of the drop
LENS_POWER = 0.6  # lip-gap profile between the corners: (1 - u^2)^LENS_POWER
LIP_BAND = 0.35  # x mouth-chin span: the lens profile blends into the jaw profile
UPPER_BAND = 0.5  # x mouth-chin span: the upper lip's rise fades out above the line
NECK = 1.6  # x mouth-chin span: the drop fades out under the chin (keeps the map monotone)
JAW_FLAT, JAW_EDGE = 0.6, 1.2  # x jaw half width: full drop inside, none outside
CAVITY = (62.0, 20.0, 26.0)  # RGB of the mouth's dark interior
TONGUE = (150.0, 62.0, 70.0)


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


class MouthWarp:
    """Open the mouth of a portrait by `opening` in [0, 1] (see the module docstring).

    `image` (H, W, 3) uint8 is `face`'s portrait (mirrored when `flip`). Only a region
    around the lower face changes; it is rendered per frame.
    """

    def __init__(self, image: np.ndarray, face: Face, flip: bool):
        h, w = image.shape[:2]
        fx = (lambda x: w - x) if flip else (lambda x: x)
        line = np.array(sorted((fx(x), y) for x, y in face.mouth_line))  # (11, 2) left to right
        corners = sorted((fx(x), y) for x, y in face.mouth_corners)
        jaw = sorted(fx(x) for x, _ in face.jaw_sides)
        chin = face.chin[1]
        self.image = image
        self.drop = MAX_DROP * face.iod  # pixels at opening 1
        mcx, hw = (corners[0][0] + corners[1][0]) / 2, (corners[1][0] - corners[0][0]) / 2
        jcx, jhw = (jaw[0] + jaw[1]) / 2, (jaw[1] - jaw[0]) / 2
        span = chin - line[:, 1].min()  # mouth line to chin
        x0, x1 = int(jcx - JAW_EDGE * jhw) - 2, int(np.ceil(jcx + JAW_EDGE * jhw)) + 3
        y0 = int(line[:, 1].min() - max(UPPER_BAND * span, 1.5 * hw)) - 2
        y1 = int(np.ceil(chin + NECK * span + self.drop)) + 3
        self.x0, self.x1, self.y0, self.y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
        xs = np.arange(self.x0, self.x1, dtype=np.float64)  # (RW,)
        s = np.arange(self.y0, self.y1, dtype=np.float64)[:, None]  # (RH, 1) source rows
        self.ym = np.interp(xs, line[:, 0], line[:, 1])  # (RW,) lip line
        u = np.clip((xs - mcx) / hw, -1, 1)
        self.lens = (1 - u * u) ** LENS_POWER  # (RW,) lip-gap profile, 0 at the corners
        wx = 1 - _smooth((np.abs(xs - jcx) / jhw - JAW_FLAT) / (JAW_EDGE - JAW_FLAT))
        t = _smooth((s - self.ym) / (LIP_BAND * span))
        lower = (self.lens * (1 - t) + wx * t) * (1 - _smooth((s - chin) / (NECK * span)))
        upper = -UPPER_LIP_RISE * self.lens * (1 - _smooth((self.ym - s) / (UPPER_BAND * span)))
        sag = sum(
            np.exp(-0.5 * (((xs - cx) / (0.35 * hw)) ** 2 + ((s - cy) / (0.5 * hw)) ** 2))
            for cx, cy in corners
        )
        # (RH, RW) displacement per pixel of drop: source row s lands on s + drop * opening * P
        self.profile = np.where(s >= self.ym, lower, upper) + CORNER_SAG * sag * (1 - self.lens)
        self.first_lower = np.searchsorted(s[:, 0], self.ym)  # (RW,) first row below the line
        self.rows = s[:, 0]

    def render(self, opening: float) -> np.ndarray:
        """The portrait with its mouth opened by `opening`: (H, W, 3) uint8."""
        import cv2

        a = self.drop * float(opening)
        out = self.image.copy()
        if a < 0.05:
            return out
        rows = self.rows
        y_out = rows[:, None] + a * self.profile  # (RH, RW) forward map, monotone per side
        map_y = np.empty(y_out.shape, np.float32)
        cavity = np.zeros(y_out.shape, np.float32)
        depth = np.zeros(y_out.shape, np.float32)
        for j in range(y_out.shape[1]):  # invert each column
            col, k = y_out[:, j], self.first_lower[j]
            my = np.interp(rows, col, rows)
            top, bottom = col[k - 1], col[k]
            inside = (rows > top) & (rows < bottom)
            my[inside] = self.ym[j]
            map_y[:, j] = my
            if a * self.lens[j] > 0.5:
                cavity[:, j] = inside
                depth[:, j] = np.clip((rows - top) / (bottom - top), 0, 1)
        map_x = np.broadcast_to(np.arange(self.x0, self.x1, dtype=np.float32), map_y.shape)
        roi = cv2.remap(
            self.image,
            np.ascontiguousarray(map_x),
            map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        ).astype(np.float32)
        tongue = _smooth((depth - 0.55) / 0.45)[..., None]
        shade = (0.6 + 0.4 * np.abs(2 * depth - 1))[..., None]
        colour = (np.array(CAVITY) * (1 - tongue) + np.array(TONGUE) * tongue) * shade
        alpha = cv2.GaussianBlur(cavity, (0, 0), 0.7)[..., None]
        roi = roi * (1 - alpha) + colour * alpha
        out[self.y0 : self.y1, self.x0 : self.x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
        return out


def head_matrix(v: Variant, t: float, size: int, width: int) -> np.ndarray:
    """(2, 3) affine: portrait pixels -> frame pixels at time `t` (head motion, then framing)."""
    import cv2

    rot, tx, ty, scale, f1, f2, *ph = v.motion

    def wave_(k: int) -> float:  # smooth, zero-mean, in [-1, 1]
        return 0.6 * np.sin(2 * np.pi * f1 * t + ph[2 * k]) + 0.4 * np.sin(
            2 * np.pi * f2 * t + ph[2 * k + 1]
        )

    nose = ((width - v.face.nose[0]) if v.flip else v.face.nose[0], v.face.nose[1])
    head = cv2.getRotationMatrix2D(nose, rot * wave_(0), 1 + scale * wave_(3))  # (2, 3)
    head[:, 2] += (tx * wave_(1), ty * wave_(2))
    cx = (width - v.crop_centre[0]) if v.flip else v.crop_centre[0]
    k = size / v.crop_side
    crop = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * v.crop_centre[1]]])
    return crop[:, :2] @ head + np.array([[0, 0, crop[0, 2]], [0, 0, crop[1, 2]]])
