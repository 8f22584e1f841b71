"""A training recipe: both stages' runs in order (lip expert; motion and its cross-fitting
fold runs; autoencoder; frame UNet), each resumed from its checkpoint when it has one, trained
again when an older recipe made it or a run it trains from has changed (the frame UNet after
its autoencoder or stage 1; the autoencoder never waits on stage 1), and one model folder
exported at the end. The bundled demo's recipe (model/demo/recipe.py) and the shipped corpus model's
(model/corpus/recipe.py) are two `Recipe`s."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fd2talk.core.defaults import defaults
from fd2talk.model import configs as C


@dataclass(frozen=True)
class Recipe:
    """Every run's settings (the fields of its `*TrainConfig` beyond shards/out/seed)."""

    name: str  # in the progress lines: "== NAME: ..."
    lipsync: dict = field(default_factory=dict)
    motion: dict = field(default_factory=dict)
    autoencoder: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)
    folds: int = 0  # stage-1 fold models for the frame UNet's cross-fitted expression (0: none)

    def runs(self, shards: str, runs: Path, seed: int) -> list[tuple[str, object]]:
        """(trainer, config) in the order they train; paths absolute, as the CLI records them,
        so a run started either way resumes either way."""
        common = {"seed": seed}
        out = {k: str(runs / k) for k in ("lipsync", "motion", "autoencoder", "frames")}
        folds = [str(runs / f"motion_fold{k}") for k in range(self.folds)]
        motion_runs = [(out["motion"], None)] + [
            (f, f"{k}/{self.folds}") for k, f in enumerate(folds)
        ]
        return [
            (
                "lipsync",
                C.LipsyncTrainConfig(shards=shards, out=out["lipsync"], **self.lipsync, **common),
            ),
            *[
                (
                    "motion",
                    C.MotionTrainConfig(
                        shards=shards,
                        out=path,
                        lip_expert=out["lipsync"],
                        fold=fold,
                        **self.motion,
                        **common,
                    ),
                )
                for path, fold in motion_runs
            ],
            (
                "autoencoder",
                C.AutoencoderTrainConfig(
                    shards=shards, out=out["autoencoder"], **self.autoencoder, **common
                ),
            ),
            (
                "frames",
                C.FramesTrainConfig(
                    shards=shards,
                    out=out["frames"],
                    autoencoder=str(runs / "autoencoder" / "autoencoder"),
                    motion=out["motion"],  # stage-1 predictions (the paper's choice)
                    motion_folds=tuple(folds),
                    **self.frames,
                    **common,
                ),
            ),
        ]


def stale(cfg) -> bool:
    """Whether cfg.out holds a run made with other settings (an older recipe's): the resume
    check's own comparison, on config.json (tuples recorded as lists)."""
    from fd2talk.core.errors import UserError
    from fd2talk.model.configs import RESUMABLE
    from fd2talk.model.store.checkpoint import check_resumable, config_dict
    from fd2talk.model.training.run import RUN_CONFIG

    path = Path(cfg.out) / RUN_CONFIG
    if not path.is_file():
        return False

    def as_json(d: dict) -> dict:
        return json.loads(json.dumps(d))

    try:
        check_resumable(
            json.loads(path.read_text())["config"],
            as_json(config_dict(cfg)),
            RESUMABLE,
            path,
            as_json(defaults(type(cfg))),
        )
    except UserError:
        return True
    return False


def train_run(name: str, cfg, progress: bool, restart: bool, label: str = "recipe") -> bool:
    """Train (or resume) one run of the recipe; a run an older recipe made, or one whose inputs
    changed (`restart`), starts again. Returns whether the runs that train from it must: whether
    this run trained a step (anew, or resumed to more steps than it had)."""
    from fd2talk.model.store.checkpoint import CHECKPOINT, load_checkpoint
    from fd2talk.model.training.autoencoder import train_autoencoder
    from fd2talk.model.training.frames import train_frames
    from fd2talk.model.training.lipsync import train_lipsync
    from fd2talk.model.training.motion import train_motion

    fn = {
        "lipsync": train_lipsync,
        "motion": train_motion,
        "autoencoder": train_autoencoder,
        "frames": train_frames,
    }[name]
    out = Path(cfg.out)
    if out.is_dir() and (restart or stale(cfg)):
        print(
            f"== {label}: {out} was made by an older recipe or from older runs: training it again",
            flush=True,
        )
        shutil.rmtree(out)
        restart = True
    ckpt = out / CHECKPOINT

    def step() -> int | None:
        return int(load_checkpoint(ckpt)["step"]) if ckpt.is_file() else None

    before = step()
    if progress:
        print(
            f"== {label}: {name}{' (resuming)' if before is not None else ''} -> {cfg.out}",
            flush=True,
        )
    fn(cfg, resume=before is not None, progress=progress)
    return restart or step() != before


def train_recipe(
    recipe: Recipe,
    work: str | Path,
    runs: str | Path,
    model: str | Path,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Train every run of `recipe` on the prepared shards in `work`; runs under `runs`, the
    model folder at `model` (returned)."""
    from fd2talk.model.store.folder import export

    shards, runs = str(Path(work).resolve() / "shards"), Path(runs).resolve()
    changed: set[Path] = set()  # the runs that trained a step in this call
    for name, cfg in recipe.runs(shards, runs, seed):
        restart = bool(inputs(cfg) & changed)  # trained from a run that has changed since
        if train_run(name, cfg, progress, restart, recipe.name):
            changed.add(Path(cfg.out))
    return export([str(runs / "motion"), str(runs / "frames")], model)


def inputs(cfg) -> set[Path]:
    """The run directories a run trains from: the lip expert (motion), the autoencoder and the
    stage-1 runs (frames)."""
    paths = [getattr(cfg, k, None) for k in ("lip_expert", "motion")]
    paths += list(getattr(cfg, "motion_folds", ()))
    out = {Path(p) for p in paths if p}
    if getattr(cfg, "autoencoder", None):
        out.add(Path(cfg.autoencoder).parent)  # RUN/autoencoder, the folder the run writes
    return out
