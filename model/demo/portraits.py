"""The demo's two people (DESIGN.md section 6): real portraits that ship with the install, and
where MediaPipe FaceLandmarker finds their features.

`FACES`: scikit-image's astronaut (Eileen Collins, NASA photo) and matplotlib's sample photo
of Grace Hopper (US Navy, public domain); `Face` holds each one's mouth, chin, jaw, eyes and
nose points, measured once in the portrait's pixels, and how a frame frames it.

Two people, assigned independently of the mirroring (`face_of`), so each appears both ways
round and in the train and held-out splits: with one portrait, a model could tell every
video's appearance from its head pose and never need its reference frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fd2talk.core.skip import PrepError


@dataclass(frozen=True)
class Face:
    """One demo identity: a portrait and its geometry as MediaPipe FaceLandmarker sees it
    (points measured once, in the portrait's pixels; x, y)."""

    name: str  # the manifest's speaker_id
    # Midpoints of the inner-lip contour pairs from corner to corner (78/78, 191/95, 80/88,
    # 81/178, 82/87, 13/14, 312/317, 311/402, 310/318, 415/324, 308/308): where the lips part.
    mouth_line: tuple[tuple[float, float], ...]
    mouth_corners: tuple[tuple[float, float], ...]  # landmarks 61, 291
    chin: tuple[float, float]  # 152
    jaw_sides: tuple[tuple[float, float], ...]  # 58, 288: the face edge at mouth height
    eyes: tuple[tuple[float, float], ...]  # 33, 263 (outer eye corners)
    nose: tuple[float, float]  # 4: head rotations turn about it
    crop_side: float  # portrait pixels shown in a frame (before the per-video factor)
    crop_y: float  # the frame's centre row (before the per-video offset)

    @property
    def iod(self) -> float:
        """Inter-ocular distance (outer corners) in portrait pixels."""
        return float(np.hypot(*np.subtract(*self.eyes)))

    def image(self) -> np.ndarray:
        """The portrait: (H, W, 3) uint8 RGB."""
        return _PORTRAITS[self.name]()


# scikit-image's astronaut (Eileen Collins, NASA photo; 512x512): the face is ~90 px wide.
ASTRONAUT = Face(
    name="astronaut",
    mouth_line=(
        (203.9, 139.7),
        (206.7, 141.5),
        (209.5, 142.9),
        (213.1, 144.2),
        (217.7, 145.4),
        (223.1, 146.2),
        (228.7, 145.9),
        (233.3, 144.9),
        (237.0, 143.8),
        (240.0, 142.7),
        (242.9, 141.1),
    ),
    mouth_corners=((202.3, 139.2), (244.5, 140.6)),
    chin=(221.4, 177.4),
    jaw_sides=((182.6, 139.8), (265.0, 143.9)),
    eyes=((195.3, 100.6), (255.3, 103.8)),
    nose=(223.7, 127.0),
    crop_side=250.0,
    crop_y=135.0,
)
# matplotlib's sample photo of Grace Hopper (US Navy, public domain; 512 wide x 600 high):
# frontal, glasses, uniform and cap; the face is ~200 px wide. Framed a little tighter than
# the astronaut so that every per-video framing stays inside the photo.
HOPPER = Face(
    name="hopper",
    mouth_line=(
        (237.0, 279.1),
        (241.6, 279.0),
        (245.9, 278.9),
        (251.6, 278.9),
        (258.6, 279.2),
        (266.7, 279.4),
        (275.3, 278.6),
        (283.0, 277.7),
        (289.4, 277.2),
        (294.2, 277.0),
        (299.7, 276.8),
    ),
    mouth_corners=((234.0, 279.4), (302.5, 276.7)),
    chin=(270.2, 334.6),
    jaw_sides=((188.1, 273.7), (345.2, 264.8)),
    eyes=((207.2, 193.5), (322.0, 186.7)),
    nose=(266.4, 238.5),
    crop_side=430.0,
    crop_y=254.0,
)
# Two people, neither tied to a flip or a colour look, so that a model can only tell a
# Two people, neither tied to a flip or a colour look, so that a model can only tell a
# video's appearance from its reference frame (the frame UNet must use its reference).
FACES = (ASTRONAUT, HOPPER)

# The light scarf folds inside the astronaut's collar ring look like a face to BlazeFace
# (scores up to 0.79 in mirrored frames, so `crop` made extra face tubes): they are painted
# over with the turtleneck's dark colour (ellipse centre, semi-axes; only below NECK_Y).
COLLAR_CENTRE, COLLAR_AXES, NECK_Y = (212.0, 210.0), (82.0, 54.0), 190.0
TURTLENECK = (22.0, 20.0, 24.0)


def _astronaut() -> np.ndarray:
    import cv2
    from skimage import data

    img = data.astronaut().astype(np.float32)  # (512, 512, 3)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    ring = (
        ((xx - COLLAR_CENTRE[0]) / COLLAR_AXES[0]) ** 2
        + ((yy - COLLAR_CENTRE[1]) / COLLAR_AXES[1]) ** 2
    ) < 1
    m = cv2.GaussianBlur((ring & (yy > NECK_Y)).astype(np.float32), (0, 0), 3)[..., None]
    return np.round(img * (1 - m) + np.array(TURTLENECK) * m).astype(np.uint8)


def _hopper() -> np.ndarray:
    import cv2
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # ships with matplotlib
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.shape != (600, 512, 3):
        raise PrepError(
            f"demo: matplotlib's sample image {path} is missing or not the "
            "expected 512x600 photo; reinstall matplotlib (pip install matplotlib)"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_PORTRAITS = {"astronaut": _astronaut, "hopper": _hopper}


def face_of(index: int) -> Face:
    """Video `index`'s person: astronaut, hopper, hopper, astronaut, astronaut, ... (period 4,
    while the flip alternates with period 2, so every person appears both ways round)."""
    return FACES[((index + 1) // 2) % 2]
