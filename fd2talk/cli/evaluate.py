"""`fd2talk-eval`: score talking-head videos (any method's) and run the paper's protocol on a
model's held-out split (thin: build the settings, call `fd2talk.model.evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fd2talk.cli.common import Device, FaceModelOpt, Quiet, run
from fd2talk.core.device import DeviceName, resolve_device
from fd2talk.model.solvers import Solver

EVAL_HELP = """Score talking-head videos with the paper's metrics and offline ones.

`videos` scores any method's videos (matched to their ground truth by name); `run` generates a
model's held-out clips as the paper's protocol does and scores them. Metrics whose weights are
not here are reported unavailable with the file they need; the others still run. Outputs:
a table laid out like the paper's Table 1 (its FD2Talk row beside ours), eval.json (settings,
versions, everything), eval.csv (a row per video) and eval.png (the distributions, and the
mouth opening against the speech for a few videos).
"""
app = typer.Typer(help=EVAL_HELP, add_completion=False, pretty_exceptions_enable=False)

SyncNetOpt = Annotated[
    str | None,
    typer.Option(
        "--syncnet",
        help="syncnet_v2.model (LSE-D, "
        "LSE-C; default $FD2TALK_SYNCNET): from joonson/syncnet_python's "
        "download_model.sh.",
    ),
]
HopenetOpt = Annotated[
    str | None,
    typer.Option(
        "--hopenet",
        help="hopenet_robust_alpha1.pkl "
        "(the paper's Diversity and Beat Align; default $FD2TALK_HOPENET): from "
        "natanielruiz/deep-head-pose.",
    ),
]
InceptionOpt = Annotated[
    str | None,
    typer.Option(
        "--inception",
        help="pt_inception-2015-12-05-"
        "6726825d.pth (FID; default $FD2TALK_INCEPTION): from pytorch-fid's "
        "releases.",
    ),
]
EvalWorkers = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Videos scored at once, each in its own process (CPU); the metrics do not change.",
    ),
]
EvalOut = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Where eval.json, eval.csv and eval.png go (and, for `run`, the generated videos).",
    ),
]


def _report(rows, tools, out: Path, settings: dict, timings: dict[str, float], quiet: bool) -> None:
    from fd2talk.core.schema import FPS
    from fd2talk.model.evaluation import report

    summary = report.summarize(rows)
    seconds = max(sum(r["frames"] for r in rows) / FPS, 1e-9)
    speed = {k: v / seconds for k, v in timings.items()}
    settings = {**settings, "seconds_per_video_second": speed}
    paths = report.write_report(out, rows, summary, settings, tools.unavailable, tools.weights)
    if not quiet:
        typer.echo(report.table(summary, tools.unavailable))
        typer.echo(
            "s of compute per s of video: " + ", ".join(f"{k} {v:.2f}" for k, v in speed.items())
        )
        typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@app.command("videos")
def eval_videos(
    generated: Annotated[
        Path,
        typer.Option(
            "--generated",
            "-g",
            help="A folder of generated "
            "videos (any method's); a NAME.npz with `pose` beside NAME.mp4 adds the "
            "coefficient-based diversity and beat align.",
        ),
    ],
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            "-r",
            help="A folder of "
            "ground-truth videos with the same names (PSNR, SSIM, LMD, jaw r); "
            "without it only the metrics that need none run.",
        ),
    ] = None,
    out: EvalOut = Path("eval"),
    syncnet: SyncNetOpt = None,
    hopenet: HopenetOpt = None,
    inception: InceptionOpt = None,
    face_model: FaceModelOpt = None,
    workers: EvalWorkers = 1,
    device: Device = DeviceName.auto,
    quiet: Quiet = False,
) -> None:
    """Score a folder of videos (any method's) against ground truth matched by name."""
    from fd2talk.model.evaluation.pool import score_videos
    from fd2talk.model.evaluation.tools import Tools
    from fd2talk.model.evaluation.videos import match_videos

    pairs = match_videos(generated, reference)
    tools = Tools.load(syncnet, face_model, resolve_device(device.value), hopenet, inception)
    rows, seconds = score_videos(pairs, tools, progress=not quiet, workers=workers)
    _report(
        rows,
        tools,
        out,
        {
            "command": "videos",
            "generated": str(generated),
            "reference": str(reference) if reference else None,
            "workers": workers,
        },
        {"score": seconds},
        quiet,
    )


@app.command("run")
def eval_run(
    model: Annotated[list[Path], typer.Option("--model", "-m", help="Model folder (both stages).")],
    shards: Annotated[Path, typer.Option("--shards", help="The prepared shards (WORK/shards).")],
    split: Annotated[str, typer.Option(help="Which split to generate and score.")] = "test",
    out: EvalOut = Path("eval"),
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Sampler steps (default: the model's).")] = None,
    solver: Annotated[
        Solver, typer.Option(help="ddim (the paper's) or dpm++ (a few steps do).")
    ] = Solver.ddim,
    syncnet: SyncNetOpt = None,
    hopenet: HopenetOpt = None,
    inception: InceptionOpt = None,
    face_model: FaceModelOpt = None,
    workers: EvalWorkers = 1,
    device: Device = DeviceName.auto,
    quiet: Quiet = False,
) -> None:
    """The paper's protocol: every clip of a split generated from its first frame and its own
    speech (generated pose for sync/diversity/beat align, the clip's own pose for the image
    metrics), then scored. Videos already under --out are reused (a killed run resumes)."""
    from fd2talk.model.evaluation.protocol import run_protocol
    from fd2talk.model.evaluation.tools import Tools
    from fd2talk.model.generation.options import Options

    tools = Tools.load(syncnet, face_model, resolve_device(device.value), hopenet, inception)
    rows, timings = run_protocol(
        model,
        shards,
        split,
        out,
        tools,
        Options(seed=seed, steps=steps, solver=solver),
        progress=not quiet,
        workers=workers,
    )
    _report(
        rows,
        tools,
        out,
        {
            "command": "run",
            "model": [str(m) for m in model],
            "shards": str(shards),
            "split": split,
            "seed": seed,
            "steps": steps,
            "solver": solver.value,
            "workers": workers,
        },
        timings,
        quiet,
    )


def main() -> None:
    """`fd2talk-eval`."""
    run(app)
