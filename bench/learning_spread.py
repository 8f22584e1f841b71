"""The learning tests' figures over several training seeds, so their thresholds are set from
a measured spread (with margin) rather than from one run on one machine.

For each seed, the demo runs are trained exactly as the test fixtures train them
(tests/conftest.py's *_SETTINGS) and measured with the tests' own helpers:

- lip expert: balanced in-sync / off-sync accuracy on the val split (test: > 0.62);
- motion: r(sampled jawOpen, speech envelope) on the test clips, 2 sampling seeds each
  (test: mean > 0.5, min > 0.3);
- autoencoder: val PSNR gain from step 0 (test: > 5 dB);
- frames: PSNR of frames sampled from noise, real minus shuffled motion (test: > 1 dB) and
  real minus the other person's reference (test: > 0.5 dB on average, > 0 on every clip).

Window seams are measured by bench/motion_seams.py. Usage:
    .venv/bin/python bench/learning_spread.py [--work DEMO_WORK] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def measure(work: Path, root: Path, seed: int) -> dict:
    import conftest as c
    from helpers.frames import psnr_by_condition
    from helpers.motion import jaw_vs_speech

    from fd2talk.model.configs import (
        AutoencoderTrainConfig,
        FramesTrainConfig,
        LipsyncTrainConfig,
        MotionTrainConfig,
    )
    from fd2talk.model.data import loader as data
    from fd2talk.model.data.frame_items import FRAME_FIELDS, to_image
    from fd2talk.model.generation import frames as fr
    from fd2talk.model.training.autoencoder import train_autoencoder
    from fd2talk.model.training.frames import train_frames
    from fd2talk.model.training.lipsync import train_lipsync
    from fd2talk.model.training.motion import train_motion

    shards = str(work / "shards")
    out = {}
    lip = train_lipsync(
        LipsyncTrainConfig(shards=shards, out=str(root / "lip"), seed=seed, **c.LIPSYNC_SETTINGS),
        progress=False,
    )
    out["lip_balanced"] = (lip["acc_in_sync"] + lip["acc_off_sync"]) / 2
    train_motion(
        MotionTrainConfig(
            shards=shards,
            out=str(root / "motion"),
            seed=seed,
            lip_expert=str(root / "lip"),
            **c.MOTION_SETTINGS,
        ),
        progress=False,
    )
    rs = jaw_vs_speech(root / "motion", work)
    out["jaw_r_mean"], out["jaw_r_min"] = float(np.mean(rs)), float(np.min(rs))
    train_autoencoder(
        AutoencoderTrainConfig(shards=shards, out=str(root / "ae"), seed=seed, **c.AE_SETTINGS),
        progress=False,
    )
    val = [
        json.loads(line)
        for line in (root / "ae" / "metrics.jsonl").read_text().splitlines()
        if '"val"' in line
    ]
    out["ae_psnr_gain"] = val[-1]["psnr"] - val[0]["psnr"]
    train_frames(
        FramesTrainConfig(
            shards=shards,
            out=str(root / "frames"),
            seed=seed,
            autoencoder=str(root / "ae" / "autoencoder"),
            **c.FRAMES_SETTINGS,
        ),
        progress=False,
    )
    model = fr.load_frames(root / "frames", "cpu")
    clips = [
        clip
        for split in ("test", "val")
        for clip in data.iter_clips(shards, split, FRAME_FIELDS + ("mp4",))
    ]
    for clip in clips:
        clip["img"] = torch.from_numpy(to_image(data.decode_frames(clip["mp4"], c.STAGE2_IMAGE)))
    psnr = psnr_by_condition(model, clips)  # per clip
    out["frames_vs_shuffled_db"] = float((psnr["real"] - psnr["shuffled_motion"]).mean())
    out["frames_vs_other_person_db"] = float((psnr["real"] - psnr["other_reference"]).mean())
    out["frames_vs_other_person_min_db"] = float((psnr["real"] - psnr["other_reference"]).min())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="a demo work dir (default: made in a temp dir)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    from motion_seams import demo_work  # bench/ is on the path when this script runs

    tmp = Path(tempfile.mkdtemp(prefix="fd2talk-spread-"))
    work = demo_work(args.work or tmp / "demo")
    rows = []
    for seed in args.seeds:
        rows.append(measure(work, tmp / f"seed{seed}", seed))
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
    for k in rows[0]:
        v = np.array([r[k] for r in rows])
        print(
            f"{k:24s} mean {v.mean():.3f}  min {v.min():.3f}  max {v.max():.3f}  "
            f"sd {v.std():.3f}  ({len(v)} seeds)"
        )


if __name__ == "__main__":
    main()
