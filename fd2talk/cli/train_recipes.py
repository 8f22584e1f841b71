"""`fd2talk-train demo` and `fd2talk-train corpus`: a whole recipe (both stages, every run
resumed, one model folder exported) on the bundled demo or on the corpus of real faces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fd2talk.cli.common import Quiet
from fd2talk.core.errors import UserError

Runs = Annotated[Path, typer.Option("--runs", help="Where the recipe's run directories go.")]
ModelOut = Annotated[Path, typer.Option("--out", help="The model folder to write.")]


def _prepared(work: Path, how: str) -> None:
    if not (work / "shards" / "manifest.jsonl").is_file():
        raise UserError(f"{work} holds no shards: {how}")


def demo(
    work: Annotated[
        Path, typer.Option("--work", help="The prepared demo (`fd2talk-prep run WORK --demo`).")
    ] = Path("work/demo"),
    runs: Runs = Path("work/runs"),
    out: ModelOut = Path("work/model"),
    quiet: Quiet = False,
) -> None:
    """Train both stages on the bundled demo with its recipe (model/demo/recipe.py: lip
    expert, motion, autoencoder, frame UNet; tiny presets, 64-px frames, about ten minutes on
    a 2-core CPU) and export one model folder. Interrupted runs resume."""
    from fd2talk.model.demo.recipe import train_demo

    _prepared(work, f"run `fd2talk-prep run {work} --demo` first")
    folder = train_demo(work, runs, out, progress=not quiet)
    typer.echo(f"model folder {folder}")


def corpus(
    work: Annotated[
        Path,
        typer.Option(
            "--work",
            help="The prepared corpus (`fd2talk-prep manifest corpus` then `fd2talk-prep run`).",
        ),
    ] = Path("work/corpus"),
    runs: Runs = Path("work/corpus_runs"),
    out: ModelOut = Path("work/corpus_model"),
    seed: Annotated[int, typer.Option("--seed", help="Every run's seed.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Train the real-face model on the prepared corpus with its recipe (model/corpus/recipe.py:
    tiny presets, 128-px frames, split by identity; about an hour on a 2-core CPU) and export
    one model folder. Interrupted runs resume."""
    from fd2talk.model.corpus.recipe import train_corpus

    _prepared(
        work,
        f"run `fd2talk-prep manifest corpus ../shared/corpus --out {work}/corpus.csv` and "
        f"`fd2talk-prep run {work} --manifest {work}/corpus.csv -j 2` first (docs/training.md)",
    )
    folder = train_corpus(work, runs, out, progress=not quiet, seed=seed)
    typer.echo(f"model folder {folder}")
