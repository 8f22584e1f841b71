"""The demo's video over training seeds: `fd2talk-train demo`'s recipe (model/demo/recipe.py)
trained with each seed on the bundled demo, then every figure of `model/demo/check.py` on the
two held-out clips (face found, jawOpen r with its speech and with other speech, PSNR with the
clip's own motion against copying the reference, colour, identity), and per figure the worst
clip and seed: the end-to-end test's bars (tests/model/demo/test_e2e.py) sit below those with margin.

Usage: .venv/bin/python bench/demo_quality.py [--work work/demo] [--seeds 0 1 2]
(about 10 minutes a seed on 2 cores; the demo is prepared first when `--work` has no shards).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from motion_seams import demo_work

    from fd2talk.model.demo.check import check_demo
    from fd2talk.model.demo.recipe import train_demo

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(REPO / "work" / "demo"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="where runs go (default: a temporary folder)")
    args = ap.parse_args()
    work = demo_work(Path(args.work))
    root = Path(args.out or tempfile.mkdtemp(prefix="demo_quality_"))
    rows = []
    for seed in args.seeds:
        model = train_demo(
            work,
            root / f"seed{seed}" / "runs",
            root / f"seed{seed}" / "model",
            progress=False,
            seed=seed,
        )
        for r in check_demo(model, work, root / f"seed{seed}" / "check"):
            print(f"seed {seed}: {r.line()}", flush=True)
            rows.append(r)
    worst = {
        "face found (min)": min(r.face_rate for r in rows),
        "jaw r (min)": min(r.jaw_r for r in rows),
        "jaw r - shuffled (min)": min(r.jaw_r - r.jaw_r_shuffled for r in rows),
        "PSNR gain over copy, dB (min)": min(r.psnr - r.psnr_copy for r in rows),
        "colour, levels (max)": max(r.colour for r in rows),
        "identity other - own (min)": min(r.id_other - r.id_own for r in rows),
    }
    print("worst over clips and seeds: " + ", ".join(f"{k} {v:.2f}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
