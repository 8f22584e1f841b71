"""Head motion from elsewhere (`--pose from:VIDEO_OR_NPZ`): in place of stage 1's pose p
(paper section 3.2), the `pose` array of a .npz (`--save-coeffs` writes one, so does
`fd2talk-prep coeffs`) or the pose of another video's face, read as training read its clips.

A video is tracked as the crop stage frames a clip (DESIGN.md section 2): its faces are found
in frames decoded at 25 fps with the long side at most 320 px, the union of their boxes is
turned into one square crop by the crop stage's rule (`tubes.join`, `tubes.crop_box`), and the
coefficient backend of the shards reads the pose from every 256 px crop frame. Where the crop
stage differs, on purpose: every frame's largest face is taken (no tubes: a driving video is
expected to show one person, and a face that moves far from where it started would split a
tube), every frame is detected (the crop stage detects every fifth, filling gaps only where
the faces change), and the detector's frame size is always even (`scan.detect_dims` keeps an
odd size at or below 320 px).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE, FPS, POSE_DIM
from fd2talk.model.generation.coeffs import read_coefficients
from fd2talk.model.generation.reference import DETECT_SIZE

DECODE_TIMEOUT = 600.0  # seconds per pass over the video


def fit_length(track: np.ndarray, frames: int) -> np.ndarray:
    """A (P, D) track cut or extended to `frames` rows: longer ones are cut, shorter ones play
    forwards then backwards (no jump where they repeat)."""
    if len(track) >= frames:
        return track[:frames]
    bounce = np.concatenate([track, track[-2:0:-1]]) if len(track) > 2 else track
    reps = -(-frames // len(bounce))
    return np.tile(bounce, (reps, 1))[:frames]


def pose_track(
    source: str, frames: int, notes: list, backend: str, face_model: str | None = None
) -> np.ndarray:
    """(frames, 6) pose from a .npz (a `pose` array, e.g. --save-coeffs or a coeffs file)
    or a video (its largest face, cropped as training crops, through the coefficient
    `backend`), fitted to `frames` (a note says when it was cut or played back and forth)."""
    path = Path(source)
    if not path.is_file():
        raise UserError(f"--pose from:{source}: file not found")
    if path.suffix == ".npz":
        with np.load(path) as z:
            if "pose" not in z:
                raise UserError(
                    f"--pose from:{path}: the .npz has no `pose` array (it has "
                    f"{', '.join(z.files)})"
                )
            pose = np.asarray(z["pose"], np.float32)
    else:
        pose = video_pose(path, backend, face_model)
    if pose.ndim != 2 or pose.shape[1] != POSE_DIM or not len(pose):
        raise UserError(
            f"--pose from:{path}: pose of shape {pose.shape}, expected (frames, {POSE_DIM})"
        )
    if not np.isfinite(pose).all():
        raise UserError(f"--pose from:{path}: the pose holds inf/NaN")
    if len(pose) != frames:
        notes.append(
            f"pose from {path.name}: {len(pose)} frames for {frames}; "
            f"{'cut' if len(pose) > frames else 'played back and forth'}"
        )
    return fit_length(pose, frames)


def video_pose(path: Path, backend: str, face_model: str | None = None) -> np.ndarray:
    """Per-frame pose (F, 6) of a video's largest face: one fixed crop (the union of its
    boxes, the crop stage's rule), the coefficient `backend` on every crop frame; frames
    without a face take their neighbour's pose."""
    from fd2talk.core import media
    from fd2talk.core.skip import Skip
    from fd2talk.pipeline.backends.detect import MediaPipeDetector
    from fd2talk.pipeline.stages.tubes import crop_box, join

    try:
        p = media.probe(path, need_audio=False)
        k = min(1.0, DETECT_SIZE / max(p.width, p.height))
        dw, dh = max(2, round(p.width * k / 2) * 2), max(2, round(p.height * k / 2) * 2)
        boxes = []
        with MediaPipeDetector(face_model) as det:
            for im in media.iter_frames(
                path, dw, dh, DECODE_TIMEOUT, [("fps", FPS)], stream=p.video_index
            ):
                faces = det.detect(im)
                if faces:
                    b = max(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))
                    boxes.append(
                        (
                            b[0] * p.width / dw,
                            b[1] * p.height / dh,
                            b[2] * p.width / dw,
                            b[3] * p.height / dh,
                        )
                    )
        if not boxes:
            raise UserError(f"--pose from:{path}: no face found in the video")
        x0, y0, x1, y1 = crop_box(functools.reduce(join, boxes), p.width, p.height)
        crops = media.iter_frames(
            path,
            CROP_SIZE,
            CROP_SIZE,
            DECODE_TIMEOUT,
            [("fps", FPS), ("crop", x1 - x0, y1 - y0, x0, y0)],
            stream=p.video_index,
        )
        arrays = read_coefficients(crops, backend, face_model)
    except Skip as e:
        raise UserError(f"--pose from:{path}: {e.detail}") from None
    valid, pose = arrays["valid"], arrays["pose"].astype(np.float32)
    if not valid.any():
        raise UserError(f"--pose from:{path}: the landmarker finds no face in its crops")
    idx = np.flatnonzero(valid)
    nearest = idx[np.abs(np.arange(len(pose))[:, None] - idx[None]).argmin(1)]
    return pose[nearest]
