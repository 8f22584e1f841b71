"""The training checkpoint format (DESIGN.md section 3): RUN/checkpoint.pt, one file holding
everything a bit-for-bit resume needs, one schema for every trainer (`checkpoint_state`):

    {format, kind, config, git_revision, step, world, models, ema, optimizers,
     ranks (every rank's noise generator and global RNG states),
     extras (the trainer's own record: statistics, dims, configs...)}

written atomically (`save_checkpoint`) and read by `load_checkpoint`, its one reader (the
training run resumes from it, the model folder is exported from it). `check_resumable` is the
resume rule: every setting but the ones a resume may change must be the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from fd2talk.core.errors import UserError

CHECKPOINT = "checkpoint.pt"  # RUN/checkpoint.pt
CHECKPOINT_FORMAT = 1  # the "format" of every checkpoint.pt (the schema above)


def checkpoint_state(
    kind: str,
    config: dict,
    git_revision: str,
    step: int,
    world: int,
    models: dict,
    ema: dict,
    optimizers: dict,
    ranks: list,
    extras: dict,
) -> dict:
    """One checkpoint of the schema above: `models`, `ema`, `optimizers` state dicts by name,
    `ranks` every rank's random streams (`rng.streams`), `extras` the trainer's record."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "config": config,
        "git_revision": git_revision,
        "step": step,
        "world": world,
        "models": models,
        "ema": ema,
        "optimizers": optimizers,
        "ranks": ranks,
        "extras": extras,
    }


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file beside `path`, fsync, rename: never a half-written checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, kind: str | None = None) -> dict:
    """A checkpoint.pt of the schema above; `kind` ("motion", ...) must match."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "kind" not in state:
        raise UserError(f"{path} is not an fd2talk checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path} was written by an older fd2talk (checkpoint format "
            f"{state.get('format')}, this one reads {CHECKPOINT_FORMAT}): train it "
            "again with this version"
        )
    if kind is not None and state["kind"] != kind:
        raise UserError(
            f"{path} is a {state['kind']!r} checkpoint, not a {kind} checkpoint "
            f"(`fd2talk-train {kind}` writes those)"
        )
    return state


def config_dict(config) -> dict:
    """A run's settings as the checkpoint records them (a config dataclass, or a dict)."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def check_resumable(
    saved: dict, current: dict, ignore: tuple[str, ...], path: Path, defaults: dict | None = None
) -> None:
    """Refuse to resume when a setting other than `ignore` (steps, logging…) changed. A setting
    the checkpoint does not record (added to fd2talk after it was written) counts as its
    default in `defaults`, which is what that run used."""
    saved = {**{k: v for k, v in (defaults or {}).items() if k not in saved}, **saved}
    diff = [
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if k not in ignore and saved.get(k) != current.get(k)
    ]
    if diff:
        raise UserError(
            f"{path} was trained with other settings ({'; '.join(diff)}): resume with "
            "the same settings, or start a new run in another --out directory"
        )
