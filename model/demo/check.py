"""Is the demo's video worth looking at? The held-out demo clips through `FD2TalkPipeline`,
measured four ways (bench/demo_quality.py prints them; the end-to-end test asserts them):

- face: the share of generated frames in which MediaPipe's landmarker finds a face;
- lips: Pearson r between the generated video's jawOpen (read back by the landmarker) and
  the true clip's, with stage-1 motion from the clip's own speech, and the same with another
  clip's speech (shuffled audio: r should fall to about 0);
- image: with the clip's own pose and expression (the paper fixes motion for image metrics),
  PSNR against the true frames at the model's image size, beside copying the reference; and
  the largest per-channel difference of the mean colour (0-255 levels);
- identity: the shape of the upper face, which speech does not move: the mean pose-free
  canonical landmarks (as the mediapipe backend's `id`) of the points above the nose tip (eyes,
  brows, nose, forehead), averaged over the frames where a face is found, of the generated
  video is closer to its own true clip's than to the other person's held-out clip's (the
  whole-face `id` mixes in how open the mouth is on average, which is the speech's, not the
  person's).

The reference is each clip's first valid frame, as in training; the generated frames are
compared at the model's image size, the landmarker reads the video at 256 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fd2talk.core.schema import CROP_SIZE


def pooled_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 images (any shape), 255 peak, over all their pixels at once (one
    MSE for a whole video, not the mean of per-frame PSNRs as `evaluation.metrics.psnr`)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """`evaluation.metrics.pearson`, 0 where it is undefined (fewer than 3 faces, no spread):
    a video without a readable mouth has no correlation to report."""
    from fd2talk.model.evaluation.metrics import pearson as r

    value = r(a, b)
    return 0.0 if np.isnan(value) else value


@dataclass
class ClipReport:
    key: str
    person: str
    face_rate: float  # share of generated frames with a face (stage-1 motion)
    jaw_r: float  # r(generated jawOpen, true jawOpen), stage-1 motion from the clip's speech
    jaw_r_shuffled: float  # the same with another clip's speech
    jaw_std: tuple[float, float]  # std of jawOpen: generated, true
    psnr: float  # true motion vs true frames
    psnr_copy: float  # the reference copied to every frame vs true frames
    colour: float  # max |mean colour difference| over R, G, B (levels), true motion
    id_own: float  # identity distance to its own clip
    id_other: float  # identity distance to the other person's held-out clip

    def line(self) -> str:
        return (
            f"{self.key} ({self.person}): face {100 * self.face_rate:.0f} %, jaw r "
            f"{self.jaw_r:.2f} (shuffled {self.jaw_r_shuffled:.2f}; std {self.jaw_std[0]:.3f}"
            f" vs {self.jaw_std[1]:.3f}), PSNR {self.psnr:.1f} dB vs copy {self.psnr_copy:.1f}"
            f" (+{self.psnr - self.psnr_copy:.1f}), colour {self.colour:.1f} levels, identity "
            f"{self.id_own:.3f} own vs {self.id_other:.3f} other"
        )


def read_coeffs(frames, face_model):
    """The landmarker's reading of every frame (the mediapipe coefficient backend)."""
    from fd2talk.model.generation.coeffs import read_coefficients

    return read_coefficients(frames, "mediapipe", face_model)


def upper_face(face_model: str | None = None) -> np.ndarray:
    """Indices of the canonical face's landmarks above the nose tip (landmark 1)."""
    from fd2talk.pipeline.backends.canonical import canonical_face

    mesh = canonical_face(face_model).mesh  # (468, 3), y up
    return np.flatnonzero(mesh[:, 1] > mesh[1, 1])


def identity(arrays: dict, points: np.ndarray) -> np.ndarray:
    """Mean upper-face canonical landmarks over the valid frames, flattened."""
    lm = arrays["lm3d"][arrays["valid"]][:, points].astype(np.float64)
    return lm.mean(0).ravel() if len(lm) else np.full(3 * len(points), np.nan)


def read_crop_video(video: Path) -> np.ndarray:
    from fd2talk.core import media

    return media.read_frames(video, CROP_SIZE, CROP_SIZE, 600.0)


def check_demo(
    model: str | Path,
    work: str | Path,
    out_dir: str | Path,
    face_model: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    split: str = "test",
) -> list[ClipReport]:
    """Generate and measure every clip of the demo's held-out `split`."""
    import cv2

    from fd2talk.model.data import loader as data
    from fd2talk.model.generation.options import Options
    from fd2talk.model.generation.pipeline import FD2TalkPipeline
    from fd2talk.pipeline.backends.landmarker import JAW_OPEN

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = FD2TalkPipeline.from_pretrained(model, face_model=face_model)
    s = pipe.image_size
    clips = [
        c
        for c in data.iter_clips(Path(work) / "shards", split, ("exp", "pose", "valid", "mp4"))
        if c["meta"].get("audio") is not False
    ]  # clips with speech
    if len(clips) < 2:
        raise ValueError(f"need two held-out clips in {split}, found {len(clips)}")
    points = upper_face(face_model)
    info = {}
    for c in clips:
        src = out_dir / f"{c['key']}.src.mp4"
        src.write_bytes(c["mp4"])
        frames = read_crop_video(src)  # (F, 256, 256, 3)
        first = int(np.flatnonzero(c["valid"])[0])
        info[c["key"]] = dict(
            src=src,
            frames=frames,
            ref=frames[first],
            person=str(c["meta"].get("speaker_id", "?")),
            ident=identity(read_coeffs(frames, face_model), points),
        )
    reports = []
    for i, c in enumerate(clips):
        me, other = info[c["key"]], info[clips[(i + 1) % len(clips)]["key"]]
        opts = Options(seed=seed, steps=steps, crop=False)
        gen = pipe(me["ref"], me["src"], out=out_dir / f"{c['key']}.mp4", options=opts)
        arrays = read_coeffs(read_crop_video(gen.out), face_model)
        valid = arrays["valid"]
        jaw = np.where(valid, arrays["exp"][:, JAW_OPEN], np.nan)
        true_jaw = np.where(c["valid"], c["exp"][:, JAW_OPEN], np.nan)
        n = min(len(jaw), len(true_jaw))
        shuffled = pipe(
            me["ref"], other["src"], out=out_dir / f"{c['key']}.shuffled.mp4", options=opts
        )
        a2 = read_coeffs(read_crop_video(shuffled.out), face_model)
        jaw2 = np.where(a2["valid"], a2["exp"][:, JAW_OPEN], np.nan)
        m = min(len(jaw2), n)
        true = pipe(
            me["ref"],
            me["src"],
            options=opts,
            keep_frames=True,
            motion={"exp": c["exp"], "pose": c["pose"]},
        )
        ok = np.flatnonzero(c["valid"][: len(true.video)])
        gt = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in me["frames"]])
        ref_small = cv2.resize(me["ref"], (s, s), interpolation=cv2.INTER_AREA)
        gv, tv = true.video[ok], gt[ok]
        reports.append(
            ClipReport(
                key=c["key"],
                person=me["person"],
                face_rate=float(valid.mean()),
                jaw_r=pearson(jaw[:n], true_jaw[:n]),
                jaw_r_shuffled=pearson(jaw2[:m], true_jaw[:m]),
                jaw_std=(float(np.nanstd(jaw)), float(np.nanstd(true_jaw))),
                psnr=pooled_psnr(gv, tv),
                psnr_copy=pooled_psnr(np.broadcast_to(ref_small, tv.shape), tv),
                colour=float(np.abs(gv.reshape(-1, 3).mean(0) - tv.reshape(-1, 3).mean(0)).max()),
                id_own=float(np.linalg.norm(identity(arrays, points) - me["ident"])),
                id_other=float(np.linalg.norm(identity(arrays, points) - other["ident"])),
            )
        )
    return reports
