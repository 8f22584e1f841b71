"""What the model commands share: the `--device`/`--dtype`/`--quiet` options, preset choices
as enums, and `run`, which turns a `UserError` into its message and exit status 2 (anything
else is a bug and keeps its traceback)."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from fd2talk.core.device import DeviceName
from fd2talk.core.errors import UserError

Device = Annotated[
    DeviceName, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
FaceModelOpt = Annotated[
    str | None,
    typer.Option(
        "--face-model",
        help="face_landmarker.task "
        "(default: $FD2TALK_FACE_MODEL or `fd2talk-prep fetch-face-model`'s "
        "place).",
    ),
]
DType = StrEnum("DType", {k: k for k in ("fp32", "bf16", "fp16")})


def choices(name: str, presets: dict) -> type[StrEnum]:
    """A preset dict's keys as the enum Typer shows as the option's choices."""
    return StrEnum(name, {k: k for k in presets})


def run(app: typer.Typer) -> None:
    """Run a Typer app as a console script: a `UserError` is one red line and exit 2."""
    try:
        app()
    except UserError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
