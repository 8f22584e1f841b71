"""Long-audio motion: window seams and speed, joint (MultiDiffusion) vs sequential inpainting.

For each training seed, a tiny motion model is trained on the bundled demo (as the tests do:
600 steps, batch 16, lr 1e-3, no lip expert), then motion is sampled for two voices, the
demo's espeak-ng speech (its held-out clips, concatenated) and the synthetic voice
(`pipeline.speech.synthetic_speech`, log-mel features), with several sampling seeds, both
ways. Per run it reports the mean frame-to-frame change (normalised expression) into the
frames where a window starts or ends, divided by the mean of the changes inside windows (1:
boundaries move like any other frame; above 1: a jerk at the seams), and divided by the 90th
percentile of the changes inside windows (the test's bound). The steps are heavy-tailed
(the in-window mean is ~1.5x the median), so means are compared with means. Then the speed of sampling 60 s
of audio (1500 frames, 50 steps) both ways, for the tiny and the paper presets.

Usage: .venv/bin/python bench/motion_seams.py [--work DIR] [--train-seeds 0 1 2]
       [--sample-seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def demo_work(work: Path) -> Path:
    """`work`, with the bundled demo prepared in it unless it already holds its shards."""
    if not (work / "shards" / "manifest.jsonl").is_file():
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from fd2talk.cli.prep import main; main()",
                "run",
                str(work),
                "--demo",
                "-q",
            ],
            check=True,
            cwd=REPO,
        )
    return work


def voices(work: Path, model) -> dict[str, np.ndarray]:
    from fd2talk.model.data import loader as data
    from fd2talk.model.demo.speech import normalise, synthetic_speech
    from fd2talk.pipeline.backends.audio_features import LogMel

    espeak = np.concatenate([c["audio"] for c in data.iter_clips(work / "shards", "test")])
    wav = normalise(synthetic_speech(12 * 16000, 16000, np.random.default_rng(0)))
    synth = LogMel().features(wav.astype(np.float32), 12 * 25)
    return {"espeak": espeak.astype(np.float32), "synthetic": synth.astype(np.float32)}


def seam_ratios(model, feats: np.ndarray, stitch: str, seed: int) -> tuple[float, float]:
    """(mean boundary step / mean in-window step, mean boundary step / in-window p90)."""
    from fd2talk.model.data import loader as data
    from fd2talk.model.generation import motion

    exp = motion.sample(model, feats, seed=seed, stitch=stitch)["exp"]
    x = model.stats.normalize("exp", exp)
    starts = motion.window_starts(max(len(x), data.WINDOW), data.WINDOW, motion.OVERLAP)
    at, inside = motion.boundary_steps(np.asarray(x), starts)
    return float(at.mean() / inside.mean()), float(at.mean() / np.percentile(inside, 90))


def train(work: Path, out: Path, seed: int) -> Path:
    from fd2talk.model.training.motion import MotionTrainConfig, train_motion

    if not (out / "checkpoint.pt").is_file():
        train_motion(
            MotionTrainConfig(
                shards=str(work / "shards"),
                out=str(out),
                steps=600,
                batch_size=16,
                lr=1e-3,
                lambda_sync=0,
                val_every=600,
                epoch_batches=100,
                seed=seed,
                device="cpu",
            ),
            progress=False,
        )
    return out


def speed(preset: str, frames: int = 1500, steps: int = 50) -> dict[str, float]:
    """Seconds to sample `frames` frames both ways with an untrained model of `preset`."""
    from fd2talk.model.data.loader import DatasetInfo
    from fd2talk.model.data.normalize import Stats
    from fd2talk.model.diffusion import Diffusion
    from fd2talk.model.generation import motion
    from fd2talk.model.training.motion import build_models

    torch.manual_seed(0)
    nets = {k: m.eval() for k, m in build_models(preset, 3, 52, 80).items()}
    stats = Stats(
        {
            "exp": np.zeros(52, np.float32),
            "pose": np.zeros(6, np.float32),
            "audio": np.zeros(80, np.float32),
        },
        {
            "exp": np.ones(52, np.float32),
            "pose": np.ones(6, np.float32),
            "audio": np.ones(80, np.float32),
        },
        1,
    )
    model = motion.MotionModel(
        nets, stats, Diffusion(), DatasetInfo("mediapipe", 52, "logmel", 80), {}, "cpu", 0
    )
    feats = np.random.default_rng(0).standard_normal((frames, 80)).astype(np.float32)
    out = {}
    for stitch in ("joint", "inpaint"):
        t0 = time.perf_counter()
        motion.sample(model, feats, steps=steps, stitch=stitch)
        out[stitch] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="a demo work dir (default: made in a temp dir)")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sample-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    args = ap.parse_args()
    from fd2talk.model.generation import motion

    tmp = Path(tempfile.mkdtemp(prefix="fd2talk-seams-"))
    work = demo_work(args.work or tmp / "demo")
    torch.set_num_threads(1)
    rows = []
    for ts in args.train_seeds:
        model = motion.load_motion(train(work, tmp / f"motion{ts}", ts), "cpu")
        for voice, feats in voices(work, model).items():
            for stitch in ("joint", "inpaint"):
                r = [seam_ratios(model, feats, stitch, s) for s in args.sample_seeds]
                mean, p90 = np.array(r).T
                rows.append((ts, voice, stitch, mean, p90))
                print(
                    f"train seed {ts} {voice:9s} {stitch:7s}: boundary / in-window mean "
                    f"{mean.mean():.2f} ({mean.min():.2f}-{mean.max():.2f}); / in-window p90 "
                    f"{p90.mean():.2f} ({p90.min():.2f}-{p90.max():.2f})",
                    flush=True,
                )
    for stitch in ("joint", "inpaint"):
        mean = np.concatenate([r[3] for r in rows if r[2] == stitch])
        p90 = np.concatenate([r[4] for r in rows if r[2] == stitch])
        print(
            f"ALL {stitch:7s}: boundary / in-window mean {mean.mean():.2f} (range "
            f"{mean.min():.2f}-{mean.max():.2f}, sd {mean.std():.2f}); / in-window p90 "
            f"{p90.mean():.2f} (range {p90.min():.2f}-{p90.max():.2f}) ({len(mean)} runs)"
        )
    torch.set_num_threads(2)
    for preset in args.presets:
        t = speed(preset)
        print(
            f"60 s of audio (1500 frames, 50 steps), {preset} preset: joint {t['joint']:.2f} s, "
            f"inpaint {t['inpaint']:.2f} s, joint is x{t['inpaint'] / t['joint']:.2f} faster"
        )


if __name__ == "__main__":
    main()
