"""MediaPipe FaceLandmarker over a clip: blendshapes, pose, 478 landmarks (DESIGN.md section 6).

The offline coefficient backend (and the landmark source of the `deep3d` backend):

    with Landmarker(face_model) as lmk:          # VIDEO mode, one face, one clip
        frame = lmk.detect(rgb, index)           # timestamp = index * 1000 / FPS ms
        track = lmk.track(frames)                # every frame of a clip -> Track

Per frame it gives whether a face was found, the 52 blendshape scores in
MediaPipe's fixed order (`BLENDSHAPE_NAMES`), the 4x4 facial transformation
matrix (canonical face model -> MediaPipe's metric camera space, cm) and the 478
landmarks (x, y in pixels of the frame, z in the same pixel scale, larger =
farther from the camera). A frame without a face gives zeros everywhere.

Derived quantities:

- `pose_from_matrix`: 6-d pose [pitch, yaw, roll, tx, ty, tz]. The rotation
  R = M[:3, :3] (column vectors, x right, y up, z towards the camera) is
  factored as R = Rz(roll) @ Ry(yaw) @ Rx(pitch), the order Deep3D's
  `compute_rotation` uses for its (x, y, z) angles; angles in radians,
  yaw in [-pi/2, pi/2]. Translation is M[:3, 3] in cm.
- the pose-removed (canonical) landmarks: `canonical.canonical_landmarks`, against the
  canonical face of the same `.task` bundle (`check_task` checks it holds both).
- `five_points`: Deep3D's 5 alignment points (image-left eye centre,
  image-right eye centre, nose tip, image-left and image-right mouth corners)
  from the 478: eye centres are the means of the eye corners, as Deep3D's
  `extract_5p` does with 68 points.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fd2talk.core.quiet import native_stderr_silenced
from fd2talk.core.schema import FPS
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends import weights

N_LANDMARKS = 478  # 468 face mesh points + 10 iris points
N_BLENDSHAPES = 52
# MediaPipe's blendshape categories in the fixed order of its output (index = position).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "eyeLookDownLeft",
    "eyeLookDownRight",
    "eyeLookInLeft",
    "eyeLookInRight",
    "eyeLookOutLeft",
    "eyeLookOutRight",
    "eyeLookUpLeft",
    "eyeLookUpRight",
    "eyeSquintLeft",
    "eyeSquintRight",
    "eyeWideLeft",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawOpen",
    "jawRight",
    "mouthClose",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthFunnel",
    "mouthLeft",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthPucker",
    "mouthRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "noseSneerLeft",
    "noseSneerRight",
)
BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}
JAW_OPEN = BLENDSHAPE_INDEX["jawOpen"]  # 25
MOUTH_CLOSE = BLENDSHAPE_INDEX["mouthClose"]

# Landmark indices (MediaPipe face mesh topology).
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # inner-lip midpoints: their gap = mouth opening
# Deep3D's 5 points from the mesh: (indices averaged) per point, in Deep3D's order.
# Chosen against the detections shipped with Deep3D's example faces (mean error ~0.04
# of the inter-ocular distance): eye corners 33/133 and 362/263, nose tip 4, mouth
# corners 61 and 291.
FIVE_POINT_IDS: tuple[tuple[int, ...], ...] = ((33, 133), (362, 263), (4,), (61,), (291,))

GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"
LANDMARKER_MEMBERS = (
    "face_detector.tflite",
    "face_landmarks_detector.tflite",
    "face_blendshapes.tflite",
)


@dataclass
class Frame:
    """One frame's result; all zeros when `found` is False."""

    found: bool
    blendshapes: np.ndarray  # (52,) float32 scores in [0, 1], BLENDSHAPE_NAMES order
    matrix: np.ndarray  # (4, 4) float32 canonical model -> metric camera space (cm)
    landmarks: np.ndarray  # (478, 3) float32 x, y in pixels, z in the same pixel scale

    @classmethod
    def empty(cls) -> Frame:
        """No face: all zeros."""
        return cls(
            False,
            np.zeros(N_BLENDSHAPES, np.float32),
            np.zeros((4, 4), np.float32),
            np.zeros((N_LANDMARKS, 3), np.float32),
        )


@dataclass
class Track:
    """Every frame of a clip, stacked; rows of frames without a face are zero."""

    found: np.ndarray  # (F,) bool
    blendshapes: np.ndarray  # (F, 52) float32
    matrix: np.ndarray  # (F, 4, 4) float32
    landmarks: np.ndarray  # (F, 478, 3) float32

    def __len__(self) -> int:
        return len(self.found)

    @classmethod
    def stack(cls, frames: list[Frame]) -> Track:
        if not frames:
            return cls(
                np.zeros(0, bool),
                np.zeros((0, N_BLENDSHAPES), np.float32),
                np.zeros((0, 4, 4), np.float32),
                np.zeros((0, N_LANDMARKS, 3), np.float32),
            )
        return cls(
            np.array([f.found for f in frames], bool),
            np.stack([f.blendshapes for f in frames]),
            np.stack([f.matrix for f in frames]),
            np.stack([f.landmarks for f in frames]),
        )


def timestamp_ms(index: int, fps: float = FPS) -> int:
    """VIDEO-mode timestamp of frame `index` (monotonic, from 0 at the clip's first frame)."""
    return round(index * 1000 / fps)


class Landmarker:
    """MediaPipe FaceLandmarker in VIDEO mode (tracking across frames) for one clip.

    Create one per clip: timestamps restart at 0 and no tracking state leaks from
    another clip, so a clip's result does not depend on what ran before it.
    `model` is a path (flag/env/default as `weights.face_model_path`) or the
    `.task` bytes already read.
    """

    def __init__(
        self,
        model: str | Path | bytes | None = None,
        fps: float = FPS,
        min_confidence: float = 0.5,
        origin: str | Path | None = None,
    ):
        """`origin`: where bytes given as `model` came from (named in a load error)."""
        from mediapipe.tasks.python import BaseOptions, vision

        if isinstance(model, bytes):
            buffer, origin = model, origin or "the given model bytes"
        else:
            origin = weights.face_model_path(model)
            buffer = origin.read_bytes()
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=buffer),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=1,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = None
        try:
            with native_stderr_silenced():
                self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError, OSError, IndexError) as e:  # MediaPipe refuses it
            raise weights.model_load_error(Path(origin), "face landmarker", e) from None
        self.fps = fps
        self._first = True  # the first inference logs too

    def detect_raw(self, frame: np.ndarray, index: int):
        """The bare model call: (H, W, 3) uint8 RGB frame `index` -> MediaPipe's result."""
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        if self._first:
            self._first = False
            with native_stderr_silenced():
                return self._landmarker.detect_for_video(image, timestamp_ms(index, self.fps))
        return self._landmarker.detect_for_video(image, timestamp_ms(index, self.fps))

    def detect(self, frame: np.ndarray, index: int) -> Frame:
        """(H, W, 3) uint8 RGB frame number `index` of the clip -> `Frame`."""
        result = self.detect_raw(frame, index)
        if not result.face_landmarks:
            return Frame.empty()
        h, w = frame.shape[:2]
        lms = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], np.float32)
        lms *= np.array([w, h, w], np.float32)  # normalised -> pixels (z scales like x)
        scores = np.array([c.score for c in result.face_blendshapes[0]], np.float32)
        matrix = np.asarray(result.facial_transformation_matrixes[0], np.float32).reshape(4, 4)
        return Frame(True, scores, matrix, lms)

    def track(self, frames: Iterable[np.ndarray]) -> Track:
        """Every frame of a clip (frames in order, starting at index 0) -> `Track`."""
        return Track.stack([self.detect(f, i) for i, f in enumerate(frames)])

    def close(self) -> None:
        if self._landmarker is not None:
            with native_stderr_silenced():
                self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bare_inference(frames: np.ndarray, model: str | Path | bytes | None = None) -> int:
    """The landmarker alone over (N, H, W, 3) uint8 frames (for the bench); returns faces found."""
    found = 0
    with Landmarker(model) as lmk:
        for i, frame in enumerate(frames):
            found += bool(lmk.detect_raw(frame, i).face_landmarks)
    return found


# ---- the .task bundle ---------------------------------------------------------------------


def check_task(model: str | Path | None = None) -> Path:
    """Resolve the face landmarker bundle and check it is a zip holding every member the
    landmarker and the canonical face need (reads only the zip's directory); else PrepError."""
    task = weights.face_model_path(model)
    try:
        with zipfile.ZipFile(task) as zf:
            names = set(zf.namelist())
    except zipfile.BadZipFile as e:
        raise PrepError(
            f"{task} is not a readable MediaPipe {weights.FACE_MODEL_NAME} bundle "
            f"({e}): {weights.FETCH_HINT}, or pass --face-model PATH to a good "
            "copy"
        ) from None
    missing = [m for m in (*LANDMARKER_MEMBERS, GEOMETRY_MEMBER) if m not in names]
    if missing:
        raise PrepError(
            f"{task} holds no {', '.join(missing)}: is it MediaPipe's "
            f"{weights.FACE_MODEL_NAME}? {weights.FETCH_HINT}, or pass "
            "--face-model PATH to a good copy"
        )
    return task


# ---- pose ---------------------------------------------------------------------------------


def rotation_from_angles(angles: np.ndarray) -> np.ndarray:
    """(..., 3) [pitch, yaw, roll] radians -> (..., 3, 3) R = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    a = np.asarray(angles, np.float64)
    (cx, cy, cz), (sx, sy, sz) = np.moveaxis(np.cos(a), -1, 0), np.moveaxis(np.sin(a), -1, 0)
    r = np.empty(a.shape[:-1] + (3, 3))
    r[..., 0, 0] = cz * cy
    r[..., 0, 1] = cz * sy * sx - sz * cx
    r[..., 0, 2] = cz * sy * cx + sz * sx
    r[..., 1, 0] = sz * cy
    r[..., 1, 1] = sz * sy * sx + cz * cx
    r[..., 1, 2] = sz * sy * cx - cz * sx
    r[..., 2, 0] = -sy
    r[..., 2, 1] = cy * sx
    r[..., 2, 2] = cy * cx
    return r


def angles_from_rotation(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation -> (..., 3) [pitch, yaw, roll], inverse of `rotation_from_angles`."""
    r = np.asarray(r, np.float64)
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([pitch, yaw, roll], -1)


def pose_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """(..., 4, 4) facial transformation matrices -> (..., 6) float32 [pitch, yaw, roll, t].

    Any scale in the 3x3 block is divided out first; an all-zero matrix (no face)
    gives a zero pose.
    """
    m = np.asarray(matrix, np.float64)
    r = m[..., :3, :3]
    det = np.linalg.det(r)
    scale = np.cbrt(np.where(np.abs(det) > 1e-12, det, 1.0))
    angles = angles_from_rotation(r / scale[..., None, None])
    pose = np.concatenate([angles, m[..., :3, 3]], -1)
    pose[np.abs(det) <= 1e-12] = 0.0
    return pose.astype(np.float32)


# ---- Deep3D's five points -------------------------------------------------------------------


def five_points(
    landmarks: np.ndarray, point_ids: tuple[tuple[int, ...], ...] = FIVE_POINT_IDS
) -> np.ndarray:
    """(..., N, >=2) landmarks -> (..., 5, 2) Deep3D alignment points (same pixel frame): the
    mean of each group of `point_ids` (MediaPipe's 478 by default)."""
    lm = np.asarray(landmarks)[..., :2]
    return np.stack([lm[..., list(ids), :].mean(-2) for ids in point_ids], -2)


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(..., 478, >=2) -> (...,) inner-lip opening (distance of points 13 and 14)."""
    lm = np.asarray(landmarks)
    return np.linalg.norm(lm[..., UPPER_INNER_LIP, :2] - lm[..., LOWER_INNER_LIP, :2], axis=-1)
