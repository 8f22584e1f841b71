"""The demo's ground truth, for checking a video or a trained model against it: the mouth
opening each video was made with (saved beside it at 25 fps), and what MediaPipe's
landmarker reads back from a video (jawOpen, the lip gap), beside the opening computed from
the video's own audio at its frames.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fd2talk.core import media
from fd2talk.core.schema import SAMPLE_RATE
from fd2talk.model.demo.face_motion import frame_times, mouth_opening
from fd2talk.model.demo.generator import DEMO_DIR, ENCODE_TIMEOUT, MANIFEST


def ground_truth_openings(work: Path) -> dict[str, np.ndarray]:
    """Video key -> its mouth opening at 25 fps ((F,) float32, frame k at (k + 0.5) / 25 s)."""
    out_dir = Path(work) / DEMO_DIR
    with open(out_dir / MANIFEST, newline="") as f:
        keys = [row["key"] for row in csv.DictReader(f)]
    return {k: np.load(out_dir / f"{k}.opening.npy") for k in keys}


def jaw_open_track(video: Path, face_model: str | Path | None = None) -> tuple[np.ndarray, ...]:
    """MediaPipe's reading of `video` (`landmarker.Landmarker`), three (F,) float32 arrays:
    jawOpen, the inner-lip gap in pixels (`landmarker.lip_gap`: landmarks 13 to 14) and the
    opening computed from the video's own audio at its frames; NaN where no face is found."""
    from fd2talk.pipeline.backends.landmarker import JAW_OPEN, Landmarker, lip_gap

    info = media.probe(video)
    frames = media.iter_frames(video, info.width, info.height, ENCODE_TIMEOUT)  # (H, W, 3) each
    with Landmarker(face_model, fps=info.fps) as lmk:
        track = lmk.track(frames)
    jaw = np.where(track.found, track.blendshapes[:, JAW_OPEN], np.nan).astype(np.float32)
    gap = np.where(track.found, lip_gap(track.landmarks), np.nan).astype(np.float32)
    audio = media.read_audio(video, ENCODE_TIMEOUT)
    return jaw, gap, mouth_opening(audio, SAMPLE_RATE, frame_times(len(track), info.fps))
