"""The paper's ablations (Tables 2 and 3) at demo scale on the CPU: each variant trained with
the demo recipe (model/demo/recipe.py) on the bundled demo, for several seeds, and scored on
the demo's held-out clips with the offline metrics (no third-party weights needed).

Stage-1 variants (Table 2's single DiT, Table 3's w/o alignment mask and w/o L_sync) are
scored on their motion coefficients, sampled from each held-out clip's speech: the jawOpen
channel's r with the true jawOpen and with the speech envelope (the offline stand-ins for
LSE-C / SyncNet), and the coefficient diversity and beat align (fd2talk-eval's `coef`
columns). The stage-2 variant (Table 2's concatenated UNet conditions) is trained on the full
stage 1 and scored by `fd2talk-eval run`'s protocol (PSNR, SSIM, LMD on the clips' own pose).

For every metric the table gives mean ± std over seeds, and "full better in k/n" counts the
seeds where the full model beats the variant: only what holds in every seed is a finding at
this scale.

Usage: .venv/bin/python bench/ablations.py [--seeds 0 1 2] [--stage2-seeds 0] [--out DIR]
(stage 1: about 4 minutes a seed; stage 2: about 10 minutes a seed, on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGE1 = {
    "full": {},
    "single DiT": {"single_dit": True},
    "w/o alignment": {"k": None},
    "w/o L_sync": {"lambda_sync": 0.0},
}
STAGE1_METRICS = (
    ("jaw_r_true", "jaw r(gt) ^"),
    ("jaw_r_speech", "jaw r(speech) ^"),
    ("diversity_coeffs", "Div.(coef) ^"),
    ("beat_align_coeffs", "BA(coef) ^"),
)
STAGE2_METRICS = (
    ("psnr", "PSNR ^"),
    ("ssim", "SSIM ^"),
    ("lmd", "LMD v"),
    ("face_rate", "faces ^"),
)
LOWER_IS_BETTER = {"lmd"}


def stage1_scores(model_dir: Path, work: Path) -> dict[str, float]:
    """Offline motion metrics of a stage-1 model on the held-out clips (means over clips)."""
    from fd2talk.core import media
    from fd2talk.model.data import loader as data
    from fd2talk.model.evaluation import metrics as M
    from fd2talk.model.generation.motion import load_motion, sample
    from fd2talk.model.generation.outputs import speech_envelope
    from fd2talk.pipeline.backends.landmarker import JAW_OPEN

    model = load_motion(model_dir, "cpu")
    rows = []
    for c in data.iter_clips(work / "shards", "test"):
        m = sample(model, c["audio"], seed=0)
        n = len(c["exp"])
        samples = media.read_audio(work / "crops" / f"{c['key']}.wav", 60)
        true_jaw = np.where(c["valid"], c["exp"][:, JAW_OPEN], np.nan)
        angles = np.degrees(m["pose"][:, :3])
        onsets = M.speech_onsets(samples, n)
        rows.append(
            {
                "jaw_r_true": M.pearson(m["exp"][:, JAW_OPEN], true_jaw),
                "jaw_r_speech": M.pearson(m["exp"][:, JAW_OPEN], speech_envelope(samples, n)),
                "diversity_coeffs": M.diversity(angles),
                "beat_align_coeffs": M.beat_align(onsets, M.motion_beats(angles)),
            }
        )
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


def train_stage1(work: Path, root: Path, seed: int, change: dict) -> Path:
    from fd2talk.model import configs as C
    from fd2talk.model.demo import recipe as R
    from fd2talk.model.training.lipsync import train_lipsync
    from fd2talk.model.training.motion import train_motion

    shards = str(work.resolve() / "shards")
    lip = root / f"seed{seed}" / "lipsync"
    if not (lip / "model").is_dir():
        train_lipsync(
            C.LipsyncTrainConfig(shards=shards, out=str(lip), seed=seed, **R.LIPSYNC),
            resume=(lip / "checkpoint.pt").is_file(),
            progress=False,
        )
    name = "_".join(f"{k}-{v}" for k, v in change.items()) or "full"
    out = root / f"seed{seed}" / f"motion_{name}"
    if not (out / "model").is_dir():
        cfg = C.MotionTrainConfig(
            shards=shards, out=str(out), lip_expert=str(lip), seed=seed, **R.MOTION
        )
        train_motion(
            dataclasses.replace(cfg, **change),
            resume=(out / "checkpoint.pt").is_file(),
            progress=False,
        )
    return out


def train_stage2(work: Path, root: Path, seed: int, motion_run: Path, cond: str) -> Path:
    """Autoencoder (once a seed) and a frame UNet with `cond`; the model folder."""
    from fd2talk.model import configs as C
    from fd2talk.model.demo import recipe as R
    from fd2talk.model.store.folder import export
    from fd2talk.model.training.autoencoder import train_autoencoder
    from fd2talk.model.training.frames import train_frames

    shards = str(work.resolve() / "shards")
    ae = root / f"seed{seed}" / "autoencoder"
    if not (ae / "model").is_dir():
        train_autoencoder(
            C.AutoencoderTrainConfig(shards=shards, out=str(ae), seed=seed, **R.AUTOENCODER),
            resume=(ae / "checkpoint.pt").is_file(),
            progress=False,
        )
    fr = root / f"seed{seed}" / f"frames_{cond}"
    if not (fr / "model").is_dir():
        train_frames(
            C.FramesTrainConfig(
                shards=shards,
                out=str(fr),
                autoencoder=str(ae / "autoencoder"),
                motion=str(motion_run),
                seed=seed,
                cond=cond,
                **R.FRAMES,
            ),
            resume=(fr / "checkpoint.pt").is_file(),
            progress=False,
        )
    return export([str(motion_run), str(fr)], root / f"seed{seed}" / f"model_{cond}")


def stage2_scores(model: Path, work: Path, out: Path) -> dict[str, float]:
    from fd2talk.model.evaluation.protocol import run_protocol
    from fd2talk.model.evaluation.report import summarize
    from fd2talk.model.evaluation.tools import Tools

    rows, _ = run_protocol([model], work / "shards", "test", out, Tools(), progress=False)
    s = summarize(rows)
    return {k: s[k]["mean"] for k, _ in STAGE2_METRICS if k in s}


def table(results: dict[str, list[dict]], metrics, base: str = "full") -> str:
    names = list(results)
    head = f"{'variant':<16}" + "".join(f"{h:>22}" for _, h in metrics)
    lines = [head]
    for name in names:
        cells = []
        for k, _ in metrics:
            v = np.array([r.get(k, np.nan) for r in results[name]], float)
            cell = f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"
            if name != base:
                b = np.array([r.get(k, np.nan) for r in results[base]], float)
                wins = (b < v) if k in LOWER_IS_BETTER else (b > v)
                cell += f" [{int(wins.sum())}/{len(v)}]"
            cells.append(cell)
        lines.append(f"{name:<16}" + "".join(f"{c:>22}" for c in cells))
    lines.append("[k/n]: seeds where the full model is better than the variant")
    return "\n".join(lines)


def report(seed: int, name: str, scores: dict[str, float]) -> None:
    print(
        f"seed {seed} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True
    )


def main() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from motion_seams import demo_work

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(REPO / "work" / "demo"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--stage2-seeds", type=int, nargs="*", default=[0])
    ap.add_argument(
        "--out",
        default=None,
        help="where runs go (default: a temporary folder; give one to resume a killed run)",
    )
    args = ap.parse_args()
    work = demo_work(Path(args.work))
    root = Path(args.out or tempfile.mkdtemp(prefix="ablations_"))
    one = {name: [] for name in STAGE1}
    for seed in args.seeds:
        for name, change in STAGE1.items():
            run = train_stage1(work, root, seed, change)
            one[name].append(stage1_scores(run, work))
            report(seed, name, one[name][-1])
    print(
        "\nStage 1 (Table 2's single DiT, Table 3), offline motion metrics on the held-out "
        f"clips, seeds {args.seeds}:"
    )
    print(table(one, STAGE1_METRICS))
    if args.stage2_seeds:
        two = {"full": [], "concat": []}
        for seed in args.stage2_seeds:
            motion_run = train_stage1(work, root, seed, {})
            for cond, name in (("dual", "full"), ("concat", "concat")):
                model = train_stage2(work, root, seed, motion_run, cond)
                two[name].append(stage2_scores(model, work, root / f"seed{seed}" / f"eval_{cond}"))
                report(seed, name, two[name][-1])
        print(
            "\nStage 2 (Table 2's concatenated UNet conditions), fd2talk-eval's protocol on "
            f"the held-out clips (own pose), seeds {args.stage2_seeds}:"
        )
        print(table(two, STAGE2_METRICS))
    print(f"\nruns: {root}")


if __name__ == "__main__":
    main()
