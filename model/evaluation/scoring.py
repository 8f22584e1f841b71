"""One video's metrics (`metrics.py`), against its ground truth when there is one.

A generated video is compared with its ground truth at the ground truth's resolution, over
the frames both have (`videos.py` reads both). MediaPipe's landmarker (the install's face
model) reads every video once: its landmarks give LMD, its jawOpen the mouth sync, its head
pose the landmark diversity and beat align, which need no third-party weights. A `NAME.npz`
with `pose` beside a generated video (`fd2talk-generate --save-coeffs`) also gives both from
the motion itself. The metric networks (`tools.py`) add the paper's diversity and beat align
(Hopenet), LSE (SyncNet) and FID's features (Inception; FID itself is over the whole set,
`report.summarize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fd2talk.model.evaluation import metrics as M
from fd2talk.model.evaluation.tools import Tools
from fd2talk.model.evaluation.videos import read_video, speech_of
from fd2talk.model.generation.coeffs import read_coefficients


def _landmarks(frames: np.ndarray, face_model: str | None) -> dict:
    """The landmarker's reading of every frame (the mediapipe coefficient backend)."""
    return read_coefficients(frames, "mediapipe", face_model)


def _head(pose: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(F, 3) yaw/pitch/roll-like rotation angles in degrees (nan where no face)."""
    angles = np.degrees(np.asarray(pose, np.float64)[:, :3])
    if valid is not None:
        angles[~valid] = np.nan
    return angles


def _motion_metrics(angles: np.ndarray, onsets: np.ndarray | None, tag: str) -> dict:
    ok = np.isfinite(angles).all(1)
    out = {f"diversity_{tag}": M.diversity(angles)}
    if onsets is not None:
        filled = angles.copy()  # frames without a face take their neighbour's pose
        if ok.any() and not ok.all():
            idx = np.flatnonzero(ok)
            for d in range(3):
                filled[:, d] = np.interp(np.arange(len(angles)), idx, angles[idx, d])
        out[f"beat_align_{tag}"] = (
            M.beat_align(onsets, M.motion_beats(filled)) if ok.any() else float("nan")
        )
    return out


def score_video(
    generated: Path, reference: Path | None, tools: Tools, coeffs: Path | None = None
) -> dict:
    """Every metric this machine can compute for one generated video (and its ground truth):
    a flat dict of floats (nan where a metric does not apply, e.g. no face found). `coeffs`:
    the motion .npz the video was made from (its `pose` gives the coefficient-based diversity
    and beat align; None, or a file that is not there: none)."""
    from fd2talk.model.evaluation.nets import syncnet_embeddings
    from fd2talk.model.generation.outputs import speech_envelope
    from fd2talk.pipeline.backends.landmarker import JAW_OPEN

    gen = read_video(generated)
    row: dict = {"frames": len(gen), "face_rate": float("nan")}
    ref = None
    if reference is not None:
        ref = read_video(reference)
        gen = read_video(generated, (ref.shape[2], ref.shape[1]))
        n = min(len(gen), len(ref))
        gen, ref = gen[:n], ref[:n]
        row.update(psnr=float(np.mean(M.psnr(gen, ref))), ssim=float(np.mean(M.ssim(gen, ref))))
    samples = speech_of(generated, reference)
    lm = _landmarks(gen, tools.face_model)
    row["face_rate"] = float(lm["valid"].mean())
    jaw = np.where(lm["valid"], lm["exp"][:, JAW_OPEN], np.nan)
    onsets = None
    if samples is not None:
        env = speech_envelope(samples, len(gen))
        row["jaw_r_speech"] = M.pearson(jaw, env)
        row["_curves"] = {"jawOpen": jaw, "speech envelope": env}
        onsets = M.speech_onsets(samples, len(gen))
    row.update(_motion_metrics(_head(lm["pose"], lm["valid"]), onsets, "lmk"))
    if coeffs is not None and coeffs.is_file():
        with np.load(coeffs) as z:
            if "pose" in z:
                row.update(_motion_metrics(_head(z["pose"][: len(gen)]), onsets, "coeffs"))
    if ref is not None:
        lr = _landmarks(ref, tools.face_model)
        row["lmd"] = M.lmd(lm["lm"], lr["lm"], lm["valid"], lr["valid"])
        row["jaw_r_true"] = M.pearson(jaw, np.where(lr["valid"], lr["exp"][:, JAW_OPEN], np.nan))
    if tools.hopenet is not None:
        from fd2talk.model.evaluation.nets import hopenet_angles

        row.update(_motion_metrics(hopenet_angles(tools.hopenet, gen), onsets, "hopenet"))
    if tools.inception is not None and ref is not None:  # FID is over the set (summarize)
        from fd2talk.model.evaluation.nets import inception_features

        row["_fid"] = (
            inception_features(tools.inception, gen),
            inception_features(tools.inception, ref),
        )
    if tools.syncnet is not None and samples is not None:
        try:
            row.update(M.lse(*syncnet_embeddings(tools.syncnet, gen, samples)))
        except ValueError as e:  # too short for one 5-frame window
            row["lse_note"] = str(e)
    return row
