"""A training run, the part every `fd2talk-train` command shares (DESIGN.md section 3;
ARCHITECTURE.md, "The run layer"):

- `start_run`: distributed set-up, then every check that needs no data (preset, the run
  directory against --resume, the checkpoint's kind, format and settings); writes nothing.
- `Run`: the trainer's own checks (`refuse`), then `begin` opens the run directory
  (config.json) and its metrics log; `restore` / `save` read and write the one checkpoint
  schema (`store.checkpoint`) over `Parts`; `should_log` / `should_validate` / `should_save`
  say when; `finish` writes the model folder (RUN/model) from the last checkpoint.

Each trainer's loop is its own and reads like DiT's train.py:

    run.begin(step)
    if cfg.val_split and step == 0:               # the untrained baseline
        metrics = run.log_val(step, validate())
    run.start_progress(step, progress)
    while step < cfg.steps:
        ...zero_grad; cfg.accumulate micro-batches: forward, (loss / k).backward(); step...
        step += 1
        run.bar.update(1)
        if run.should_log(step): run.log_train(step, train.values)
        if run.should_validate(step): metrics = run.log_val(step, validate())
        if run.should_save(step): run.save(step, parts, extras)
    if run.saved != step:                         # --steps 0: the untrained model
        run.save(step, parts, extras)
    run.finish()

Validation, logging and checkpoints are due every `val_every` / `log_every` / `save_every`
steps and at the last step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from fd2talk.core.defaults import defaults
from fd2talk.core.errors import UserError
from fd2talk.model.configs import RESUMABLE, RunConfig
from fd2talk.model.store.checkpoint import (
    CHECKPOINT,
    check_resumable,
    checkpoint_state,
    config_dict,
    load_checkpoint,
    save_checkpoint,
)
from fd2talk.model.store.folder import MODEL_DIR, export
from fd2talk.model.training import rng
from fd2talk.model.training.distributed import (
    Dist,
    barrier,
    gather,
    setup_distributed,
    teardown_distributed,
)
from fd2talk.model.training.ema import EMA
from fd2talk.model.training.metrics import MetricsLog

RUN_CONFIG = "config.json"  # RUN/config.json: the kind, the settings, the git revision


@dataclass
class Parts:
    """What a checkpoint saves and a resume restores, by name: networks, their EMAs and
    optimizers, and the run's noise generator."""

    models: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    emas: dict[str, EMA] = dataclasses.field(default_factory=dict)
    generator: torch.Generator | None = None


@dataclass
class Run:
    """A training run after `start_run`: distributed set-up done, the resume checks passed,
    nothing written yet. The trainer adds its own checks (`refuse`), then opens the run
    directory (`begin`), so a refused run leaves the directory as it found it."""

    cfg: RunConfig
    kind: str
    d: Dist
    config: dict  # the resolved settings (config.json, checkpoint["config"])
    state: dict | None  # the checkpoint resumed from; None for a fresh run
    git: str
    opened: bool = False
    log: MetricsLog | None = dataclasses.field(default=None, repr=False)
    bar: object = dataclasses.field(default=None, repr=False)  # the tqdm progress bar
    saved: int = -1  # the step of the last checkpoint written (or resumed from)
    last: dict | None = dataclasses.field(default=None, repr=False)  # that checkpoint (rank 0)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    @property
    def extras(self) -> dict:
        """The resumed checkpoint's trainer-specific record ({} for a fresh run)."""
        return self.state["extras"] if self.state else {}

    def refuse(self, problem: str | None) -> None:
        """A trainer's own resume check: a message means the checkpoint does not fit."""
        if problem:
            raise UserError(f"{self.checkpoint_path}: {problem}")

    def open(self) -> None:
        """Rank 0 creates the run directory and writes config.json (settings + revision). A
        resumed run drops its old model folder: until it finishes, RUN/checkpoint.pt is the
        newest model (what `folder.read_parts(RUN)` then reads). Once per run."""
        if self.opened:
            return
        self.opened = True
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.state is not None:
                shutil.rmtree(self.out / MODEL_DIR, ignore_errors=True)
            tmp = self.out / f".{RUN_CONFIG}.tmp"
            tmp.write_text(
                json.dumps(
                    {"kind": self.kind, "config": self.config, "git_revision": self.git}, indent=2
                )
                + "\n"
            )
            os.replace(tmp, self.out / RUN_CONFIG)

    def restore(self, parts: Parts) -> int:
        """Load a resumed checkpoint into `parts`, put the RNGs back; the step to start at."""
        if not self.state:
            return 0
        for group, saved in (("models", parts.models), ("optimizers", parts.optimizers)):
            for name, obj in saved.items():
                obj.load_state_dict(self.state[group][name])
        for name, ema in parts.emas.items():
            ema.model.load_state_dict(self.state["ema"][name])
        step = int(self.state["step"])
        if self.state["world"] == self.d.world:  # this rank's own random streams
            rng.restore(self.state["ranks"][self.d.rank], parts.generator)
        else:  # another world size: fresh streams per rank, distinct from every step's before
            rng.reseed(self.cfg.seed, step, self.d.rank, parts.generator)
        return step

    def begin(self, step: int) -> None:
        """Before the loop, at `step` (0, or the step resumed from): open the run directory
        and the metrics log (truncated to `step`)."""
        self.open()
        self.log = MetricsLog(self.out, self.d.main, step)
        self.saved, self.last = (step, self.state) if self.state is not None else (-1, None)

    def start_progress(self, step: int, progress: bool) -> None:
        """The progress bar (rank 0, when `progress`), at `step` of cfg.steps."""
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.cfg.steps,
            initial=step,
            desc=self.kind,
            disable=not (progress and self.d.main),
        )

    def due(self, step: int, every: int) -> bool:
        """Every `every` steps, and at the last step."""
        return step % every == 0 or step == self.cfg.steps

    def should_log(self, step: int) -> bool:
        return self.due(step, self.cfg.log_every)

    def should_validate(self, step: int) -> bool:
        return bool(self.cfg.val_split) and self.due(step, self.cfg.val_every)

    def should_save(self, step: int) -> bool:
        return self.due(step, self.cfg.save_every)

    def log_train(self, step: int, values: dict) -> None:
        """A train row of metrics.jsonl, and the loss on the progress bar."""
        self.log.write(step, "train", values)
        self.bar.set_postfix(loss=f"{values['loss']:.4f}")

    def log_val(self, step: int, metrics: dict) -> dict:
        """A val row of metrics.jsonl; returns `metrics`."""
        self.log.write(step, "val", metrics)
        return metrics

    def save(self, step: int, parts: Parts, extras: dict) -> dict | None:
        """Rank 0 writes checkpoint.pt (the one schema of every trainer, with every rank's
        random streams); all ranks wait. Returns the state written (None on other ranks)."""
        state = None
        ranks = gather(self.d, rng.streams(parts.generator))  # every rank's streams
        if self.d.main:
            state = checkpoint_state(
                self.kind,
                self.config,
                self.git,
                step,
                self.d.world,
                models={k: m.state_dict() for k, m in parts.models.items()},
                ema={k: e.model.state_dict() for k, e in parts.emas.items()},
                optimizers={k: o.state_dict() for k, o in parts.optimizers.items()},
                ranks=ranks,
                extras=extras,
            )
            save_checkpoint(self.checkpoint_path, state)
        barrier(self.d)
        self.saved, self.last = step, state
        return state

    def finish(self) -> None:
        """After the last checkpoint: rank 0 writes the model folder (RUN/model) from it; the
        progress bar and the metrics log close and the process leaves the process group."""
        if self.d.main:
            try:
                export([self.last], self.out / MODEL_DIR)
            except UserError as e:  # the run itself is done and saved: say so, go on
                print(
                    f"warning: {self.checkpoint_path} is saved but its model folder was not "
                    f"written: {e}",
                    file=sys.stderr,
                )
        self.bar.close()
        self.log.close()
        teardown_distributed(self.d)


def start_run(cfg: RunConfig, kind: str, resume: bool, presets: dict | None = None) -> Run:
    """Distributed set-up, then every check that needs no data: preset, the run directory
    against --resume, the checkpoint's kind, format and settings. Writes nothing."""
    from fd2talk.core.revision import git_revision

    if getattr(cfg, "accumulate", 1) < 1:
        raise UserError(f"--accumulate must be at least 1, got {cfg.accumulate}")
    if presets is not None and cfg.preset not in presets:
        raise UserError(f"unknown preset {cfg.preset!r}: choose one of {', '.join(presets)}")
    d = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    config = config_dict(cfg)
    ckpt = Path(cfg.out) / CHECKPOINT
    if ckpt.exists() and not resume:
        raise UserError(
            f"{cfg.out} already holds a run ({ckpt.name}): pass --resume to continue "
            "it, or choose another --out"
        )
    if resume and not ckpt.exists():
        raise UserError(f"--resume: no {CHECKPOINT} in {cfg.out} to resume from")
    state = None
    if resume:
        state = load_checkpoint(ckpt, kind)
        check_resumable(state["config"], config, RESUMABLE, ckpt, defaults(type(cfg)))
        if state["world"] != d.world and d.main:
            print(
                f"note: {ckpt} was trained by {state['world']} processes, this run has "
                f"{d.world}: the steps, the models, EMAs and optimizers continue exactly, "
                "and each process reads its data from the same point of its new stream "
                f"(step x accumulate batches); noise and data differ from a run that kept "
                f"{state['world']} (not bit-for-bit)",
                file=sys.stderr,
            )
    return Run(cfg, kind, d, config, state, git_revision())
