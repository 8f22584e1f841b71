"""The shard sample schema (DESIGN.md section 2): the one place that defines its keys and dtypes.

The model package owns the schema; `fd2talk.pipeline.stages.shard` writes samples with
it and the training data pipeline reads them with it. A sample is one clip:

| key          | dtype   | shape          | meaning                                             |
|--------------|---------|----------------|-----------------------------------------------------|
| `__key__`    | str     |                | clip key: `[A-Za-z0-9_-]+` (webdataset splits on .) |
| `mp4`        | bytes   |                | the 256x256 25 fps crop with 16 kHz mono audio      |
| `exp.npy`    | float32 | (F, D_exp)     | expression: 64 (deep3d) or 52 blendshapes (mp)      |
| `pose.npy`   | float32 | (F, 6)         | 3 rotation angles (rad: pitch, yaw, roll) + 3 trans |
| `id.npy`     | float32 | (D_id,)        | identity: 80 (deep3d) or mean canonical lms (mp)    |
| `audio.npy`  | float16 | (F, D_audio)   | audio features at 25 fps, one row per video frame   |
| `valid.npy`  | bool    | (F,)           | False where no face was found in that frame         |
| `lm.npy`     | float32 | (F, N, 2)      | image-space landmarks in crop pixels (68 or 478)    |
| `lm3d.npy`   | float16 | (F, 478, 3)    | optional, mediapipe: pose-removed canonical lms     |
| `latent.npy` | float16 | (F, d, 64, 64) | optional: cached autoencoder latents (stage 2)      |
| `json`       | dict    |                | fps, source, speaker/video id, split, box, versions |

Invalid frames keep zeros in every per-frame array; consumers must mask with `valid`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

FPS = 25  # video frame rate of every clip, crop and feature track
SAMPLE_RATE = 16_000  # audio sample rate of every clip and crop
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 audio samples per video frame
CROP_SIZE = 256  # side of the square face crops
POSE_DIM = 6
SCHEMA_VERSION = 1

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Field:
    """One array entry of a sample."""

    key: str  # webdataset extension, e.g. "exp.npy"
    dtype: str  # numpy dtype name
    ndim: int
    per_frame: bool  # first axis is F
    required: bool = True


FIELDS: tuple[Field, ...] = (
    Field("exp.npy", "float32", 2, True),
    Field("pose.npy", "float32", 2, True),
    Field("id.npy", "float32", 1, False),
    Field("audio.npy", "float16", 2, True),
    Field("valid.npy", "bool", 1, True),
    Field("lm.npy", "float32", 3, True),
    Field("lm3d.npy", "float16", 3, True, required=False),
    Field("latent.npy", "float16", 4, True, required=False),
)
FIELD_BY_KEY = {f.key: f for f in FIELDS}
MEDIA_KEY = "mp4"
META_KEY = "json"
REQUIRED_KEYS = ("__key__", MEDIA_KEY, META_KEY) + tuple(f.key for f in FIELDS if f.required)


class SchemaError(ValueError):
    """A sample does not match the schema; the message names the key and what is wrong."""


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise SchemaError(
            f"key {key!r} may only contain letters, digits, '_' and '-' "
            "(webdataset splits keys at '.')"
        )
    return key


def validate_sample(sample: dict) -> int:
    """Check a decoded sample (arrays as numpy) against the schema; return its frame count F."""
    meta = sample.get(META_KEY)
    video_only = isinstance(meta, dict) and meta.get("audio") is False  # stage-2 data
    missing = [
        k for k in REQUIRED_KEYS if k not in sample and not (video_only and k == "audio.npy")
    ]
    if missing:
        raise SchemaError(f"sample {sample.get('__key__')!r} lacks {missing}")
    check_key(sample["__key__"])
    n_frames = None
    for field in FIELDS:
        if field.key not in sample:
            continue
        arr = np.asarray(sample[field.key])
        if arr.dtype != np.dtype(field.dtype):
            raise SchemaError(f"{field.key}: dtype {arr.dtype}, expected {field.dtype}")
        if arr.ndim != field.ndim:
            raise SchemaError(f"{field.key}: {arr.ndim} dims {arr.shape}, expected {field.ndim}")
        if field.per_frame:
            if n_frames is None:
                n_frames = arr.shape[0]
            elif arr.shape[0] != n_frames:
                raise SchemaError(
                    f"{field.key}: {arr.shape[0]} frames, but other arrays have {n_frames}"
                )
    if sample["pose.npy"].shape[1] != POSE_DIM:
        raise SchemaError(f"pose.npy: {sample['pose.npy'].shape[1]} columns, expected {POSE_DIM}")
    if isinstance(meta, dict) and meta.get("frames") not in (None, n_frames):
        raise SchemaError(f"json says {meta['frames']} frames, arrays have {n_frames}")
    return int(n_frames)
