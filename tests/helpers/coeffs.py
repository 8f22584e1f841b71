"""Face crops and coefficient runs for the coeffs and FAN tests."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import skimage.data
from scipy.io import savemat

from fd2talk.core import atomic, media, schema
from fd2talk.pipeline.backends import deep3d
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage
from helpers import frames_to_video

SIZE = schema.CROP_SIZE


def astronaut_crop() -> np.ndarray:
    """A real face photo (scikit-image's astronaut) cropped around the head, 256x256."""
    return cv2.resize(
        skimage.data.astronaut()[0:250, 100:350], (SIZE, SIZE), interpolation=cv2.INTER_AREA
    )


def moving_face(n: int) -> np.ndarray:
    """(n, 256, 256, 3): the astronaut drifting a few pixels, as a face crop does."""
    base = astronaut_crop()
    out = []
    for i in range(n):
        m = np.float32([[1, 0, 3 * np.sin(i / 4)], [0, 1, 2 * np.cos(i / 5)]])
        out.append(cv2.warpAffine(base, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)


def make_crop(
    work, key: str, frames: np.ndarray | None = None, src=None, json_frames: int | None = None
):
    """Write crops/<key>.mp4 (from frames, or `src` resized by ffmpeg) and its json sidecar."""
    crops = work / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    mp4 = crops / f"{key}.mp4"
    if frames is not None:
        frames_to_video(mp4, frames)
    else:
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(src),
                "-vf",
                f"scale={SIZE}:{SIZE}",
                "-r",
                "25",
                "-c:v",
                "libx264",
                "-crf",
                "18",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-ac",
                "1",
                "-ar",
                "16000",
                str(mp4),
            ],
            check=True,
            timeout=120,
        )
    n = media.count_frames(mp4)
    atomic.write_json(
        crops / f"{key}.json",
        {"key": key, "frames": json_frames or n, "fps": 25, "video_id": key.split("_")[0]},
    )
    return n


def run(work, **cfg):
    summary = run_stage(CoeffsStage(CoeffsConfig(**cfg)), work, progress=False)
    assert summary.failed == 0, summary.failures
    return summary


def load(work, key):
    with np.load(work / "coeffs" / f"{key}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_lm3d_mat(folder):
    """A similarity_Lm3D_all.mat with a plausible standard face (Deep3D's 68 -> 5 rule)."""
    lm = np.zeros((68, 3), np.float32)
    std5 = [
        [-0.31, 0.29, 0.13],
        [0.31, 0.29, 0.13],
        [0.0, -0.05, 0.55],
        [-0.25, -0.38, 0.22],
        [0.25, -0.38, 0.22],
    ]
    lm[36] = lm[39] = std5[0]
    lm[42] = lm[45] = std5[1]
    lm[30], lm[48], lm[54] = std5[2], std5[3], std5[4]
    folder.mkdir(parents=True, exist_ok=True)
    savemat(str(folder / deep3d.LM3D_NAME), {"lm": lm})
    return folder
