"""Stage `coeffs`: per-frame face coefficients of each crop (DESIGN.md sections 2 and 6).

Reads `crops/<key>.mp4` (+ its json) and writes `coeffs/<key>.npz` with F rows,
F = the crop's frame count exactly. Two backends:

- `mediapipe` (offline default): MediaPipe FaceLandmarker (pipeline/backends/landmarker.py):
  exp = the 52 blendshapes, pose = 3 angles + 3 translation from its facial
  transformation matrix, id = the mean pose-removed (canonical) landmarks over
  the valid frames, flattened (478 * 3).
- `deep3d` (the paper's): Deep3D's R-Net (pipeline/backends/deep3d.py) on the 224x224
  crop aligned with 5 points taken from the landmarks (`landmarks`: MediaPipe's 478,
  or, as in the paper, face-alignment's 2D-FAN 68 (pipeline/backends/fan.py)): exp 64,
  pose = angles 224:227 + trans 254:257, id 80 and tex 80 = means over the
  valid frames, gamma (F, 27). Batched, on CUDA when present.

npz members (invalid rows are zero in every per-frame array, never filled from a
neighbour):

| name    | dtype   | shape        |                                                     |
|---------|---------|--------------|-----------------------------------------------------|
| exp     | float32 | (F, 52 / 64) | blendshapes / Deep3D expression                     |
| pose    | float32 | (F, 6)       | pitch, yaw, roll (rad), tx, ty, tz                  |
| id      | float32 | (1434 / 80,) | mean canonical landmarks (cm) / Deep3D identity     |
| lm      | float32 | (F, 478|68, 2) | MediaPipe landmarks, or FAN's 68 (--landmarks fan), crop pixels |
| lm3d    | float16 | (F, 478, 3)  | canonical (pose-removed) landmarks, cm              |
| valid   | bool    | (F,)         | a face was found in the frame (fan: by both)        |
| tex     | float32 | (80,)        | deep3d only: mean texture                           |
| gamma   | float32 | (F, 27)      | deep3d only: illumination (SH)                      |
| meta    | str     | ()           | JSON: backend, dims, conventions, frame counts      |

A clip whose share of frames without a face exceeds `max_invalid` is skipped
(too_many_invalid_frames); one with no face at all is skipped (no_face). With
`deep3d`, a face whose eyes are under MIN_EYE_DISTANCE pixels apart counts as none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from fd2talk.core import atomic, media
from fd2talk.core.schema import CROP_SIZE, FPS
from fd2talk.core.skip import PrepError, Skip, SkipReason
from fd2talk.pipeline.backends import canonical, deep3d, fan, landmarker
from fd2talk.pipeline.runner.work import Item
from fd2talk.pipeline.stages.crop import OUT_DIR as CROPS_DIR
from fd2talk.pipeline.stages.crop import crop_items

OUT_DIR = "coeffs"
BACKENDS = ("mediapipe", "deep3d")
LANDMARKS = ("mediapipe", "fan")  # what deep3d aligns with (lm.npy: 478 or 68 points)
# deep3d: a face with its eyes closer than this (pixels) is too small to align (Deep3D would
# upscale the whole frame by 102 / its size) and counts as no face.
MIN_EYE_DISTANCE = 8.0
MODEL_SECONDS_PER_FRAME = 1.0  # added to the per-clip timeout: inference runs while decoding
# --landmarks fan adds S3FD + FAN-4 with its flip test per frame: ~0.65 s a face for FAN alone
# on 2 CPU cores (stand-in weights), so the budget grows by this much a frame
FAN_SECONDS_PER_FRAME = 4.0
POSE_CONVENTION = (
    "pitch, yaw, roll in radians with R = Rz(roll) @ Ry(yaw) @ Rx(pitch) "
    "(x right, y up, z towards the camera), then tx, ty, tz"
)


@dataclass(frozen=True)
class CoeffsConfig:
    backend: str = "mediapipe"  # "mediapipe" | "deep3d"
    face_model: str | None = None  # face_landmarker.task (None: $FD2TALK_FACE_MODEL / cache)
    deep3d_checkpoint: str | None = None  # epoch_20.pth (None: $FD2TALK_DEEP3D_CHECKPOINT)
    bfm_dir: str | None = None  # folder with similarity_Lm3D_all.mat (None: $FD2TALK_BFM_DIR)
    max_invalid: float = 0.2  # largest share of frames without a face a clip may have
    batch_size: int = 32  # R-Net batch (deep3d)
    device: str = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda" (deep3d)
    timeout: float = 600.0  # seconds per clip for decoding, plus MODEL_SECONDS_PER_FRAME a frame
    max_roll: float = 35.0  # degrees: a face whose median in-plane tilt is larger is skipped
    landmarks: str = "mediapipe"  # deep3d: "mediapipe" | "fan" (face-alignment's 2D-FAN)
    fan_weights: str | None = None  # 2DFAN4-11f355bf06.pth.tar (None: $FD2TALK_FAN_WEIGHTS)
    s3fd_weights: str | None = None  # fan: S3FD's s3fd-619a316812.pth ($FD2TALK_S3FD_WEIGHTS)
    # outputs made before `max_roll` existed were not checked: they count as made with 180
    LEGACY: ClassVar[dict] = {"max_roll": 180.0}


class CoeffsStage:
    """Per-frame coefficients of every crop (one item per `crops/<key>.json`)."""

    name = "coeffs"
    out_dir = OUT_DIR

    def __init__(self, config: CoeffsConfig = CoeffsConfig()):
        if config.backend not in BACKENDS:
            raise PrepError(f"unknown coeffs backend {config.backend!r}; choose one of {BACKENDS}")
        if not 0.0 <= config.max_invalid <= 1.0:
            raise PrepError(f"--max-invalid {config.max_invalid}: expected a fraction in [0, 1]")
        if config.landmarks not in LANDMARKS:
            raise PrepError(f"unknown landmarks {config.landmarks!r}; choose one of {LANDMARKS}")
        if config.landmarks == "fan" and config.backend != "deep3d":
            raise PrepError(
                "--landmarks fan aligns Deep3D's input: use it with --backend deep3d "
                "(the mediapipe backend's coefficients come with its own landmarks)"
            )
        if config.batch_size < 1:
            raise PrepError(f"--batch-size {config.batch_size}: expected at least 1")
        self.config = config
        # Resolve every file now, so a missing one is reported before any work starts.
        self._face_model = landmarker.check_task(config.face_model)
        canonical.canonical_face(str(self._face_model))  # a corrupt bundle fails here
        if config.backend == "deep3d":
            deep3d.checkpoint_path(config.deep3d_checkpoint)
            deep3d.lm3d_path(config.bfm_dir)
        if config.landmarks == "fan":
            fan.check_weights(config.fan_weights, config.s3fd_weights)
        self._face_bytes: bytes | None = None
        self._canonical: canonical.CanonicalFace | None = None
        self._net = None
        self._fan: fan.FanLandmarker | None = None
        self._uses_fan = config.landmarks == "fan"
        self._lm3d: np.ndarray | None = None

    def items(self, work: Path) -> list[Item]:
        return crop_items(work, "size")

    def setup(self) -> None:
        if self._face_bytes is not None:
            return
        cfg = self.config
        self._face_bytes = self._face_model.read_bytes()
        self._canonical = canonical.canonical_face(str(self._face_model))
        # MediaPipe loads the bundle's models now, so one it rejects fails before any clip.
        with landmarker.Landmarker(self._face_bytes, origin=self._face_model):
            pass
        if cfg.backend == "deep3d":
            self._net = deep3d.load_rnet(cfg.deep3d_checkpoint, cfg.device)
            self._lm3d = deep3d.load_lm3d(cfg.bfm_dir)
        if cfg.landmarks == "fan":
            self._fan = fan.FanLandmarker(cfg.fan_weights, cfg.s3fd_weights, cfg.device)

    def close(self) -> None:
        self._net = None
        self._fan = None
        self._face_bytes = None  # a later call sets up again

    # ---- the work ---------------------------------------------------------------------------

    def coefficients(self, frames: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        """(H, W, 3) uint8 RGB frames of one clip, in order -> the npz arrays (see module doc).

        No skip checks here (see `process`); every frame gets a row.
        """
        self.setup()
        use_rnet = self.config.backend == "deep3d"
        results: list[landmarker.Frame] = []
        points: list[np.ndarray | None] = []  # fan: each frame's 68 points (None: no face)
        pending: list[np.ndarray] = []  # aligned (224, 224, 3) crops waiting for a batch
        outputs = []  # (B, 257) tensors, possibly still running on the GPU
        with landmarker.Landmarker(self._face_bytes, origin=self._face_model) as lmk:
            for i, frame in enumerate(frames):
                res = lmk.detect(frame, i)
                if self._fan is not None:  # FAN's points align; MediaPipe's still give lm3d
                    points.append(self._fan.landmarks(frame) if res.found else None)
                    if points[-1] is None:
                        res = landmarker.Frame.empty()
                if use_rnet and res.found:
                    p5 = (
                        fan.five_points(points[-1])
                        if self._fan is not None
                        else landmarker.five_points(res.landmarks)
                    )  # (5, 2)
                    if np.linalg.norm(p5[1] - p5[0]) < MIN_EYE_DISTANCE:
                        res = landmarker.Frame.empty()  # too small to align: no usable face
                results.append(res)
                if use_rnet and res.found:
                    crop, _, _ = deep3d.align_img(frame, p5, self._lm3d)
                    pending.append(crop)
                    if len(pending) == self.config.batch_size:
                        outputs.append(deep3d.rnet_forward(self._net, np.stack(pending)))
                        pending = []
            if pending:
                outputs.append(deep3d.rnet_forward(self._net, np.stack(pending)))
        track = landmarker.Track.stack(results)
        valid = track.found
        n = len(track)
        lm3d = canonical.canonical_landmarks(track.landmarks, self._canonical)  # (F, 478, 3)
        with np.errstate(over="ignore"):  # an overflow to inf is skipped by check_finite
            lm3d16 = lm3d.astype(np.float16)
        lm = track.landmarks[..., :2].copy()
        if self._fan is not None:
            lm = np.zeros((n, fan.N_POINTS, 2), np.float32)
            rows = np.flatnonzero(valid)
            if len(rows):
                lm[rows] = np.stack([points[i] for i in rows])
        arrays = {"valid": valid, "lm": lm, "lm3d": lm3d16}
        if use_rnet:
            import torch

            coeffs = np.zeros((n, deep3d.COEFF_DIM), np.float32)
            if outputs:
                coeffs[valid] = torch.cat(outputs).float().cpu().numpy()
            parts = deep3d.split_coeffs(coeffs)
            arrays.update(
                exp=parts["exp"],
                gamma=parts["gamma"],
                pose=np.concatenate([parts["angles"], parts["trans"]], 1),
                id=_valid_mean(parts["id"], valid),
                tex=_valid_mean(parts["tex"], valid),
            )
        else:
            arrays.update(
                exp=track.blendshapes,
                pose=landmarker.pose_from_matrix(track.matrix),
                id=_valid_mean(lm3d.reshape(n, -1), valid),
            )
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        arrays["meta"] = np.array(json.dumps(self._meta(arrays), sort_keys=True))
        return arrays

    def _meta(self, arrays: dict[str, np.ndarray]) -> dict:
        backend = self.config.backend
        meta = {
            "backend": backend,
            "fps": FPS,
            "frames": int(len(arrays["valid"])),
            "valid_frames": int(arrays["valid"].sum()),
            "exp_dim": int(arrays["exp"].shape[1]),
            "id_dim": int(arrays["id"].shape[0]),
            "lm_points": int(arrays["lm"].shape[1]),
            "lm": "MediaPipe landmarks, crop pixels",
            "lm3d": "MediaPipe landmarks with the similarity transform removed "
            "(canonical face model frame, cm)",
            "pose": POSE_CONVENTION,
        }
        if backend == "mediapipe":
            meta.update(
                exp="MediaPipe blendshape scores",
                exp_names=list(landmarker.BLENDSHAPE_NAMES),
                id="mean lm3d over valid frames, flattened",
                pose_translation="cm, MediaPipe metric camera space",
            )
        else:
            meta.update(
                exp="Deep3D expression (BFM, 64)",
                id="Deep3D identity, mean over valid frames",
                tex="Deep3D texture, mean over valid frames",
                gamma="Deep3D SH illumination",
                pose_translation="Deep3D translation",
                coeff_slices={k: [s.start, s.stop] for k, s in deep3d.COEFF_SLICES.items()},
            )
            if self.config.landmarks == "fan":
                meta.update(
                    landmarks="fan",
                    lm="face-alignment 2D-FAN-4 landmarks (68, iBUG "
                    "300-W order), crop pixels; valid: FAN and MediaPipe found the face",
                )
        return meta

    def bare_inference(self, frames: np.ndarray):
        """The bare model over (N, 256, 256, 3) uint8 frames, for the bench's reference fps:
        mediapipe: the landmarker's detect_for_video on every frame, returns the number of
        frames with a face; deep3d: the R-Net on centre 224x224 crops in batches (no
        landmarks, no alignment), returns what `deep3d.bare_inference` does."""
        self.setup()
        if self.config.backend == "deep3d":
            off = (frames.shape[1] - deep3d.INPUT_SIZE) // 2
            crops = frames[:, off : off + deep3d.INPUT_SIZE, off : off + deep3d.INPUT_SIZE]
            return deep3d.bare_inference(self._net, crops, self.config.batch_size)
        return landmarker.bare_inference(frames, self._face_bytes)

    def process(self, item: Item, work: Path) -> list[str]:
        cfg = self.config
        work = Path(work)
        mp4 = work / CROPS_DIR / f"{item.key}.mp4"
        if not mp4.is_file():
            raise Skip(SkipReason.INCOMPLETE, f"{mp4} is missing beside its json")
        expected = int(item.payload["frames"])
        size = int(item.payload.get("size") or CROP_SIZE)  # crops made with --size decode at it
        per_frame = MODEL_SECONDS_PER_FRAME + (FAN_SECONDS_PER_FRAME if self._uses_fan else 0.0)
        timeout = cfg.timeout + expected * per_frame
        arrays = self.coefficients(media.iter_frames(mp4, size, size, timeout))
        check_valid(arrays["valid"], expected, cfg.max_invalid)
        check_upright(arrays["pose"], arrays["valid"], cfg.max_roll)
        check_finite(arrays)
        atomic.write_npz(work / OUT_DIR / f"{item.key}.npz", **arrays)
        return [f"{OUT_DIR}/{item.key}.npz"]


def check_valid(valid: np.ndarray, expected: int, max_invalid: float) -> None:
    """Raise the skip a clip deserves: frame count off, no face at all, too many invalid."""
    n = len(valid)
    if n != expected:
        raise Skip(
            SkipReason.INCONSISTENT, f"decoded {n} frames from the crop, its json says {expected}"
        )
    invalid = n - int(valid.sum())
    if invalid == n:
        raise Skip(SkipReason.NO_FACE, f"none of the {n} frames has a face")
    if invalid > max_invalid * n:
        raise Skip(
            SkipReason.TOO_MANY_INVALID,
            f"{invalid} of {n} frames have no face (at most {max_invalid:.0%} allowed)",
        )


def check_upright(pose: np.ndarray, valid: np.ndarray, max_roll: float) -> None:
    """Skip (face_rotated) a clip whose face lies on its side: the median in-plane tilt (roll,
    the eye line's angle) over its valid frames beyond `max_roll` degrees. Such a clip (a
    sideways camera, a phone video that lost its rotation metadata) would teach the models
    sideways faces; people tilt their heads by 10-20 degrees, not 40."""
    roll = np.degrees(np.abs(np.asarray(pose, np.float64)[valid, 2]))
    if len(roll) and (tilt := float(np.median(roll))) > max_roll:
        raise Skip(
            SkipReason.FACE_ROTATED,
            f"the face is tilted by {tilt:.0f} degrees (median; at most {max_roll:g} "
            "allowed): re-encode the source upright (ffmpeg -vf transpose=1|2 or "
            "rotate), or raise --max-roll",
        )


def check_finite(arrays: dict[str, np.ndarray]) -> None:
    """Skip (non_finite_values) a clip whose arrays hold inf/NaN, in the dtype written
    (lm3d is float16: a landmark beyond 65504 cm overflows to inf)."""
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise Skip(SkipReason.NON_FINITE, f"non-finite values in {', '.join(sorted(bad))}")


def _valid_mean(rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(F, D) -> (D,) float32 mean over the valid rows (zeros when none)."""
    if not valid.any():
        return np.zeros(rows.shape[1], np.float32)
    return rows[valid].astype(np.float64).mean(0).astype(np.float32)
