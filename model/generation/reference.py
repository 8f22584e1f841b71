"""The reference frame x (paper section 3.3): a portrait turned into the face crop the models
were trained on, and, when a model needs them, its own pose and expression.

The portrait is read upright in any mode (`media.read_image`); its faces are found with the data
pipeline's detector (BlazeFace at the crop stage's 320 px long side), the largest (or
`face_index`) is framed with the crop stage's box rule (`tubes.crop_box`: enlarged, square,
inside the image) and cut to the 256 crop, as `fd2talk-prep crop` frames training clips. The
crop's pose and expression come from the coefficient backend the shards were made with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE
from fd2talk.model.generation.coeffs import read_coefficients
from fd2talk.model.generation.options import Reference

DETECT_SIZE = 320  # long side the detector sees (the crop stage's default detect_size)
MIN_FACE = 64  # px: smaller faces are refused (the crop stage's min_face)


def find_reference(
    image: str | Path | np.ndarray,
    face_model: str | None = None,
    face_index: int | None = None,
    notes: list | None = None,
    crop: bool = True,
) -> Reference:
    """The portrait's face crop, framed as `fd2talk-prep crop` frames training clips
    (crop=False: the image is such a crop already, e.g. a frame of a shard's clip)."""
    import cv2

    from fd2talk.core import media
    from fd2talk.pipeline.backends.detect import MediaPipeDetector
    from fd2talk.pipeline.stages.tubes import crop_box

    img = media.read_image(image) if isinstance(image, (str, Path)) else media.to_rgb8(image)
    h, w = img.shape[:2]
    if min(h, w) < 32:
        raise UserError(f"the portrait is {w}x{h} px: use one at least 256 px a side")
    if not crop:
        if abs(h - w) > 2:
            raise UserError(
                f"--no-crop needs a square face crop, got {w}x{h}: leave out "
                "--no-crop to find and frame the face"
            )
        interp = cv2.INTER_AREA if w >= CROP_SIZE else cv2.INTER_CUBIC
        return Reference(
            img, cv2.resize(img, (CROP_SIZE, CROP_SIZE), interpolation=interp), (0, 0, w, h), 1
        )
    k = min(1.0, DETECT_SIZE / max(h, w))
    small = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    with MediaPipeDetector(face_model) as detector:
        faces = detector.detect(small)
    if not faces:
        raise UserError(
            "no face found in the portrait: use a photo with one clearly "
            "visible, roughly frontal face"
        )
    faces = sorted(faces, key=lambda f: -(f[2] - f[0]) * (f[3] - f[1]))  # largest first
    i = 0 if face_index is None else face_index
    if not 0 <= i < len(faces):
        raise UserError(
            f"--face-index {i}: the portrait has {len(faces)} face(s), numbered "
            f"0 to {len(faces) - 1} from the largest"
        )
    if len(faces) > 1 and face_index is None and notes is not None:
        notes.append(
            f"{len(faces)} faces in the portrait: animating the largest "
            "(--face-index picks another, 0 = largest)"
        )
    box = [v / k for v in faces[i][:4]]
    side = max(box[2] - box[0], box[3] - box[1])
    if side < MIN_FACE:
        raise UserError(
            f"the face is {side:.0f} px, smaller than the {MIN_FACE} px training "
            "faces had at least: use a closer or larger portrait"
        )
    x0, y0, x1, y1 = crop_box(box, w, h)
    region = np.ascontiguousarray(img[y0:y1, x0:x1])
    interp = cv2.INTER_AREA if x1 - x0 >= CROP_SIZE else cv2.INTER_CUBIC
    crop = cv2.resize(region, (CROP_SIZE, CROP_SIZE), interpolation=interp)
    return Reference(img, crop, (x0, y0, x1, y1), len(faces))


def measure_reference(ref: Reference, backend: str, face_model: str | None = None) -> Reference:
    """The reference crop's expression and pose, measured into `ref` (once: a measured
    reference is returned as it is) with the coefficient `backend` of the training shards."""
    if ref.pose is not None:
        return ref
    arrays = read_coefficients([ref.crop], backend, face_model)
    if not arrays["valid"][0]:
        raise UserError(
            "the landmarker finds no face in the portrait's crop, so its pose "
            "and expression are unknown: use a clearer, more frontal portrait"
        )
    ref.exp = arrays["exp"][0].astype(np.float32)
    ref.pose = arrays["pose"][0].astype(np.float32)
    return ref
