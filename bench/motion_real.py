"""Stage 1 on the team's real clips (../shared/media): do train and val losses fall?

Each clip is cut into a train part (its first 70 %) and a val part (the rest), given their
own video ids and explicit splits in the manifest, and prepared with `fd2talk-prep run`
(MediaPipe coefficients, log-mel audio). Then the lip expert and the motion transformers are
trained for `--steps` steps each and the metrics logs are summarised: train loss averaged
over the first and last tenth of the run, validation loss at every evaluation. The val part
comes from the same speakers (three clips cannot give a speaker-disjoint split), so this shows
that training works on real coefficients, not how it generalises.

Usage: .venv/bin/python bench/motion_real.py [--media DIR] [--steps 300] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIPS = ("hdtf_aoc_512.mp4", "talk_tys_512.mp4", "talk_10_512.mp4")
TRAIN_FRACTION = 0.7


def duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def manifest(media: Path, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "path", "start", "end", "video_id", "split"])
        for name in CLIPS:
            src = media / name
            cut = round(duration(src) * TRAIN_FRACTION, 2)
            stem = Path(name).stem.replace(".", "_")
            w.writerow([f"{stem}_a", src, 0, cut, f"{stem}_a", "train"])
            w.writerow([f"{stem}_b", src, cut, "", f"{stem}_b", "val"])


ENTRY = {
    "prep": "from fd2talk.cli.prep import main; main()",
    "train": "from fd2talk.cli.train import main; main()",
}


def cli(command: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", ENTRY[command], *args], check=True, cwd=REPO)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def summary(name: str, run: Path, keys: tuple[str, ...]) -> None:
    log = rows(run)
    train = [r for r in log if r["split"] == "train"]
    tenth = max(1, len(train) // 10)
    for k in keys:
        if k not in train[0]:
            continue
        first = np.mean([r[k] for r in train[:tenth]])
        last = np.mean([r[k] for r in train[-tenth:]])
        print(
            f"{name:8s} train {k:10s} first tenth {first:.4f} -> last tenth {last:.4f} "
            f"(ratio {last / first:.2f})"
        )
    for r in (r for r in log if r["split"] == "val"):
        vals = ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k not in ("step", "split"))
        print(f"{name:8s} val   step {r['step']:5d}: {vals}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--work", type=Path, default=None, help="keep the work dir here")
    args = ap.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="fd2talk-real-"))
    work = root / "work"
    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    manifest(args.media, root / "manifest.csv")
    cli("prep", "run", str(work), "-m", str(root / "manifest.csv"), "-q")
    print(
        f"prepared {json.loads((work / 'shards' / 'manifest.jsonl').open().readline())} "
        f"in {time.time() - t0:.0f} s"
    )
    every = max(1, args.steps // 6)
    common = [
        "--shards",
        str(work / "shards"),
        "--steps",
        str(args.steps),
        "--batch-size",
        "16",
        "--val-every",
        str(every),
        "--log-every",
        "5",
        "-q",
    ]
    t1 = time.time()
    cli("train", "lipsync", "--out", str(root / "lipsync"), *common)
    t2 = time.time()
    cli(
        "train",
        "motion",
        "--out",
        str(root / "motion"),
        "--lip-expert",
        str(root / "lipsync" / "checkpoint.pt"),
        "--epoch-batches",
        "100",
        *common,
    )
    t3 = time.time()
    print(
        f"lipsync {args.steps} steps in {t2 - t1:.0f} s, motion {args.steps} steps in "
        f"{t3 - t2:.0f} s (tiny presets, batch 16, CPU)"
    )
    summary("lipsync", root / "lipsync", ("loss",))
    summary("motion", root / "motion", ("loss", "loss_exp", "loss_pose", "loss_sync"))
    print(f"work dir: {root}")


if __name__ == "__main__":
    main()
