"""Does the model animate faces it never saw? The corpus's dev identities (the `test` split of
`fd2talk-prep manifest corpus`: people no training step sees) through `FD2TalkPipeline`, measured
as the demo's check does (model/demo/check.py: face rate, jaw r with own vs other speech,
PSNR with the clip's own motion vs copying the reference, colour) and three ways more:

- same person, face only: with `--pose still` (only the face moves), SSIM of the generated
  frames against the portrait's own crop (the clip's first valid frame, the reference);
- same person, generated pose: the generated video's upper-face shape (model/demo/check.py's
  `identity`: pose-free canonical landmarks above the nose tip, which speech does not move)
  is nearer its own person's true clip than any other dev identity's. No face-recognition
  weights can be had here; MediaPipe's canonical landmarks are the geometry of the face;
- a closed mouth for silence: the mean jawOpen the landmarker reads on a video made from
  silence, beside the true clip's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fd2talk.model.demo.check import (
    ClipReport,
    check_demo,
    identity,
    read_coeffs,
    read_crop_video,
    upper_face,
)


@dataclass
class DevReport:
    base: ClipReport
    ssim_still: float  # --pose still: generated frames vs the reference crop
    nearest: str  # the dev identity whose true upper face the generated one is nearest
    silent_jaw: float  # mean jawOpen of a video made from silence
    true_jaw: float  # mean jawOpen of the true clip

    def line(self) -> str:
        return (
            f"{self.base.line()}; SSIM still {self.ssim_still:.2f}; nearest {self.nearest}; "
            f"jawOpen silent {self.silent_jaw:.3f} vs true {self.true_jaw:.3f}"
        )


def _silence(path: Path, seconds: float) -> Path:
    """A 16 kHz mono 16-bit wav of digital silence."""
    import wave

    from fd2talk.core.schema import SAMPLE_RATE

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(bytes(2 * int(seconds * SAMPLE_RATE)))
    return path


def check_unseen(
    model: str | Path,
    work: str | Path,
    out_dir: str | Path,
    face_model: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    split: str = "test",
) -> list[DevReport]:
    """Generate and measure every clip with speech of the held-out `split`."""
    import cv2

    from fd2talk.core.schema import FPS
    from fd2talk.model.evaluation.metrics import ssim
    from fd2talk.model.generation.options import Options, PoseMode
    from fd2talk.model.generation.pipeline import FD2TalkPipeline
    from fd2talk.pipeline.backends.landmarker import JAW_OPEN

    out_dir = Path(out_dir)
    reports = check_demo(model, work, out_dir, face_model, seed, steps, split)
    pipe = FD2TalkPipeline.from_pretrained(model, face_model=face_model)
    s, points = pipe.image_size, upper_face(face_model)
    truth = {}  # key: (person, upper-face identity, the landmarker's arrays, frames)
    for r in reports:
        frames = read_crop_video(out_dir / f"{r.key}.src.mp4")
        arrays = read_coeffs(frames, face_model)
        truth[r.key] = (r.person, identity(arrays, points), arrays, frames)
    out = []
    for r in reports:
        _, _, true_arrays, frames = truth[r.key]
        first = int(np.flatnonzero(true_arrays["valid"])[0]) if true_arrays["valid"].any() else 0
        ref = frames[first]
        opts = Options(seed=seed, steps=steps, crop=False, pose=PoseMode.still.value)
        still = pipe(ref, out_dir / f"{r.key}.src.mp4", options=opts, keep_frames=True)
        ref_small = cv2.resize(ref, (s, s), interpolation=cv2.INTER_AREA)
        ssim_still = float(ssim(still.video, np.broadcast_to(ref_small, still.video.shape)).mean())
        gen_id = identity(
            read_coeffs(read_crop_video(out_dir / f"{r.key}.mp4"), face_model), points
        )
        dists = {k: float(np.linalg.norm(gen_id - v[1])) for k, v in truth.items()}
        nearest = truth[min(dists, key=dists.get)][0]
        silent_audio = _silence(out_dir / f"{r.key}.silence.wav", len(frames) / FPS)
        quiet = pipe(
            ref,
            silent_audio,
            out=out_dir / f"{r.key}.silent.mp4",
            options=Options(seed=seed, steps=steps, crop=False),
        )
        q = read_coeffs(read_crop_video(quiet.out), face_model)
        silent_jaw = float(q["exp"][q["valid"], JAW_OPEN].mean()) if q["valid"].any() else np.nan
        true_jaw = float(true_arrays["exp"][true_arrays["valid"], JAW_OPEN].mean())
        out.append(DevReport(r, ssim_still, nearest, silent_jaw, true_jaw))
    return out
