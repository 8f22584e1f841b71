"""`fd2talk-train`'s shared options (one Annotated type per option, the help text once), the
preset choices, and the two things every command does: build its config from its options and
print the run's validation summary."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fd2talk.cli.common import choices
from fd2talk.model import configs as C

LipPreset = choices("LipPreset", C.LIP_EXPERT_PRESETS)
MotionPreset = choices("MotionPreset", C.MOTION_PRESETS)
AutoencoderPreset = choices("AutoencoderPreset", C.AUTOENCODER_PRESETS)
UNetPreset = choices("UNetPreset", C.UNET_PRESETS)

Shards = Annotated[
    Path,
    typer.Option(
        "--shards",
        help="The shard folder `fd2talk-prep` wrote (holds manifest.jsonl and <split>-NNNNNN.tar).",
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Run directory (checkpoint.pt, metrics.jsonl, "
        "config.json; model/ when the run finishes).",
    ),
]
PRESET_HELP = (
    "Model size: tiny (CPU smoke runs, tests), paper (the published settings); the "
    "autoencoder also has small (from scratch, offline)."
)
Steps = Annotated[
    int,
    typer.Option("--steps", help="Total optimizer steps (a resumed run continues to this number)."),
]
Windows = Annotated[
    int, typer.Option("--batch-size", help="25-frame windows per step (per process).")
]
Lr = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
ValSplit = Annotated[
    str,
    typer.Option("--val-split", help="Split for validation; `none` to train without validation."),
]
Every = Annotated[int, typer.Option(help="Steps between these events.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for init, data order and noise.")]
Workers = Annotated[int, typer.Option("--workers", "-j", help="DataLoader worker processes.")]
EpochBatches = Annotated[
    int,
    typer.Option(
        "--epoch-batches",
        help="Batches per data epoch (a re-seed point of the resampled shard stream).",
    ),
]
Accumulate = Annotated[
    int,
    typer.Option(
        "--accumulate",
        min=1,
        help="Micro-batches of "
        "--batch-size per optimizer step (gradient "
        "accumulation): the step sees batch-size x accumulate "
        "x processes items, in the memory of one micro-batch.",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its checkpoint (same settings; bit-for-bit on CPU).",
    ),
]
EmaDecay = Annotated[float, typer.Option(help="EMA decay.")]
ImageSize = Annotated[
    int,
    typer.Option(
        "--image-size",
        help="Frames are resized to this side (256, the crop size; smaller for CPU smoke runs).",
    ),
]


def config_from(cls, options: dict):
    """The command's config from its options: paths resolved, enums as values, `none` as no
    validation split; `resume` and `quiet` are not settings."""
    values = {}
    for name, value in options.items():
        if name in ("resume", "quiet"):
            continue
        if isinstance(value, Path):
            value = str(value.resolve())
        elif isinstance(value, list):  # a repeated path option
            value = tuple(str(Path(v).resolve()) for v in value)
        elif isinstance(value, Enum):
            value = value.value
        values[name] = value
    if values.get("val_split", "").lower() == "none":
        values["val_split"] = None
    return cls(**values)


def print_run_summary(title: str, out: Path) -> None:
    """Validation metrics at the first and the last evaluation of the run (metrics.jsonl)."""
    import json

    from rich.console import Console
    from rich.table import Table

    log = out / "metrics.jsonl"
    val = [r for r in map(json.loads, log.read_text().splitlines()) if r["split"] == "val"]
    console = Console(stderr=True)
    if val:
        first, last = val[0], val[-1]
        table = Table(title=title)
        table.add_column("validation")
        table.add_column(f"step {first['step']}", justify="right")
        table.add_column(f"step {last['step']}", justify="right")
        for k in (k for k in last if k not in ("step", "split")):
            table.add_row(
                k,
                *(
                    f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k))
                    for r in (first, last)
                ),
            )
        console.print(table)
    console.print(
        f"checkpoint: {out / 'checkpoint.pt'}\nmodel:      {out / 'model'}\nmetrics:    {log}"
    )
