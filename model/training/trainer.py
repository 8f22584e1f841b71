"""Training machinery shared by every `fd2talk-train` command (DESIGN.md section 3).

- `setup_distributed`: one process per device under `torchrun` (NCCL on CUDA, gloo on CPU), or a
  single process when launched plainly.
- `EMA`: an exponential moving average of a model's weights, with the usual warm-up
  `decay_t = min(decay, (1 + t) / (10 + t))` so short runs are not dominated by the init.
- The run layer: `start_run` (distributed set-up, then every resume check; writes nothing),
  `Run` (the trainer's own checks, then `open` the run directory; one checkpoint schema for
  every trainer: `Run.checkpoint` / `Run.restore` over `Parts`), `RunLoop` (logging,
  validation, checkpoints and the model folder around each trainer's explicit loop).
- Checkpoints: one file holding everything a bit-for-bit resume needs, one schema for all:
  {format, kind, config, git_revision, step, world, models, ema, optimizers, ranks (every
  rank's noise generator and global RNG states), extras (the trainer's own record:
  statistics, dims, configs...)}, written atomically by rank 0; a resume needs the same
  number of processes.
- `MetricsLog`: metrics.jsonl (truncated to the resumed step so a resumed run's log reads as
  one run) and TensorBoard when it is installed.
- `autocast`: bf16 autocast on CUDA only; CPU runs in float32.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fd2talk.core.defaults import defaults
from fd2talk.core.device import resolve_device
from fd2talk.core.errors import UserError
from fd2talk.model.configs import RESUMABLE, RunConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RUN_CONFIG = "config.json"


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, device)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def teardown_distributed(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def gather(d: Dist, obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a picklable object)."""
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def wrap_ddp(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """DDP around `model` under torchrun; the model itself otherwise."""
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(d.device).index] if d.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def accumulate(models, k: int, micro) -> dict:
    """The gradients of one optimizer step from `k` micro-batches (gradient accumulation).

    `micro(i)` computes the i-th micro-batch's loss and returns (loss, {name: float}); each
    loss / k is back-propagated, so the summed gradient is that of the mean loss over the k
    micro-batches, as one batch k times larger would give. Under DDP the gradients are
    all-reduced once, on the last micro-batch (`no_sync` before). Returns the mean of "loss"
    and the scalars over the micro-batches, for logging. The caller zeroes the gradients
    before and steps the optimizer after."""
    values: dict[str, float] = {}
    for i in range(k):
        with contextlib.ExitStack() as stack:
            if i < k - 1:
                for m in models:
                    if hasattr(m, "no_sync"):  # a DDP wrapper
                        stack.enter_context(m.no_sync())
            loss, scalars = micro(i)
            (loss / k).backward()
        for name, v in {"loss": float(loss.detach()), **scalars}.items():
            values[name] = values.get(name, 0.0) + float(v) / k
    return values


def autocast(device: str):
    """bf16 autocast on CUDA, nothing on CPU (CPU training stays float32)."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class EMA:
    """Shadow copy of a model whose weights follow `p_ema <- d p_ema + (1 - d) p`."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for p_ema, p in zip(self.model.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)


# ---- checkpoints -----------------------------------------------------------------------------

def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def noise_generator(seed: int, rank: int) -> torch.Generator:
    """The run's CPU generator for diffusion noise and timesteps: one stream per rank."""
    return torch.Generator().manual_seed(seed * 1000 + rank)


CHECKPOINT_FORMAT = 1  # the "format" of every checkpoint.pt (the schema below)


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
    """A checkpoint.pt of the schema `Run.checkpoint` writes; `kind` ("motion", ...) must match."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "kind" not in state:
        raise UserError(f"{path} is not an fd2talk checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} was written by an older fd2talk (checkpoint format "
                        f"{state.get('format')}, this one reads {CHECKPOINT_FORMAT}): train it "
                        "again with this version")
    if kind is not None and state["kind"] != kind:
        raise UserError(f"{path} is a {state['kind']!r} checkpoint, not a {kind} checkpoint "
                        f"(`fd2talk-train {kind}` writes those)")
    return state


def config_dict(config) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def check_resumable(saved: dict, current: dict, ignore: tuple[str, ...], path: Path,
                    defaults: dict | None = None) -> None:
    """Refuse to resume when a setting other than `ignore` (steps, logging…) changed. A setting
    the checkpoint does not record (added to fd2talk after it was written) counts as its
    default in `defaults`, which is what that run used."""
    saved = {**{k: v for k, v in (defaults or {}).items() if k not in saved}, **saved}
    diff = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
            if k not in ignore and saved.get(k) != current.get(k)]
    if diff:
        raise UserError(f"{path} was trained with other settings ({'; '.join(diff)}): resume with "
                        "the same settings, or start a new run in another --out directory")


# ---- the run layer ---------------------------------------------------------------------------

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
    nothing written yet. The trainer adds its own checks (`refuse`), then `RunLoop` opens the
    run directory (`open`), so a refused run leaves the directory as it found it."""

    cfg: RunConfig
    kind: str
    d: Dist
    config: dict  # the resolved settings (config.json, checkpoint["config"])
    state: dict | None  # the checkpoint resumed from; None for a fresh run
    git: str
    opened: bool = False

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
        newest model (what `pretrained.read_parts(RUN)` then reads). Once per run."""
        if self.opened:
            return
        self.opened = True
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.state is not None:
                import shutil

                from fd2talk.model.store.folder import MODEL_DIR

                shutil.rmtree(self.out / MODEL_DIR, ignore_errors=True)
            tmp = self.out / f".{RUN_CONFIG}.tmp"
            tmp.write_text(json.dumps({"kind": self.kind, "config": self.config,
                                       "git_revision": self.git}, indent=2) + "\n")
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
        if self.state["world"] == self.d.world:
            mine = self.state["ranks"][self.d.rank]  # this rank's own random streams
            if parts.generator is not None:
                parts.generator.set_state(mine["generator"])
            set_rng_state(mine["rng"])
        else:  # another world size: fresh streams per rank, distinct from every step's before
            seed = int(np.random.SeedSequence([int(self.cfg.seed), step, self.d.rank])
                       .generate_state(1, np.uint64)[0] >> 1)
            if parts.generator is not None:
                parts.generator.manual_seed(seed)
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
        return step

    def checkpoint(self, step: int, parts: Parts, extras: dict) -> dict | None:
        """Rank 0 writes checkpoint.pt (the one schema of every trainer); all ranks wait.
        Returns the state written (None on other ranks)."""
        state = None
        ranks = gather(self.d, {"generator": parts.generator.get_state() if parts.generator
                                else None, "rng": rng_state()})  # every rank's streams
        if self.d.main:
            state = {"format": CHECKPOINT_FORMAT, "kind": self.kind, "config": self.config,
                     "git_revision": self.git, "step": step, "world": self.d.world,
                     "models": {k: m.state_dict() for k, m in parts.models.items()},
                     "ema": {k: e.model.state_dict() for k, e in parts.emas.items()},
                     "optimizers": {k: o.state_dict() for k, o in parts.optimizers.items()},
                     "ranks": ranks, "extras": extras}
            save_checkpoint(self.checkpoint_path, state)
        barrier(self.d)
        return state


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
        raise UserError(f"{cfg.out} already holds a run ({ckpt.name}): pass --resume to continue "
                        "it, or choose another --out")
    if resume and not ckpt.exists():
        raise UserError(f"--resume: no {CHECKPOINT} in {cfg.out} to resume from")
    state = None
    if resume:
        state = load_checkpoint(ckpt, kind)
        check_resumable(state["config"], config, RESUMABLE, ckpt, defaults(type(cfg)))
        if state["world"] != d.world and d.main:
            print(f"note: {ckpt} was trained by {state['world']} processes, this run has "
                  f"{d.world}: the steps, the models, EMAs and optimizers continue exactly, "
                  "and each process reads its data from the same point of its new stream "
                  f"(step x accumulate batches); noise and data differ from a run that kept "
                  f"{state['world']} (not bit-for-bit)", file=sys.stderr)
    return Run(cfg, kind, d, config, state, git_revision())


# ---- metrics ---------------------------------------------------------------------------------

class MetricsLog:
    """Append-only metrics.jsonl (rank 0), plus TensorBoard scalars when tensorboard exists."""

    def __init__(self, out: Path, main: bool, resume_step: int = 0):
        self.main = main
        self.path = Path(out) / METRICS
        self.tb = None
        if not main:
            return
        if self.path.exists():  # drop what a killed run logged after its last checkpoint
            keep = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self.tb = SummaryWriter(str(Path(out) / "tb"), purge_step=resume_step + 1)

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.main:
            return
        row = {"step": step, "split": split,
               **{k: round(float(v), 6) if isinstance(v, float) else v for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class RunLoop:
    """The bookkeeping around an explicit training loop: opens the run directory, progress bar,
    metrics log, validation (at step 0 of a fresh run and every `val_every` steps),
    checkpoints (every `save_every` steps, at the last step, and at the end even when no step
    ran: `--steps 0` writes the untrained baseline), the model folder (RUN/model, written from
    the last checkpoint, `pretrained.export`), and the distributed teardown. The loop itself
    stays in each trainer:

        loop = RunLoop(run, step, parts, extras, validate, progress)
        while step < cfg.steps:
            ...one optimizer step...
            step += 1
            loop.step_done(step, {"loss": ..., ...})
        return loop.finish(step)

    `extras` (a dict, or a callable returning one at save time) is the trainer's own record
    in the checkpoint; `after_save(step)` runs on rank 0 after each checkpoint.
    """

    def __init__(self, run: Run, step: int, parts: Parts, extras, validate, progress: bool,
                 after_save=None):
        from tqdm import tqdm

        run.open()
        self.run, self.cfg, self.d = run, run.cfg, run.d
        self.parts, self.extras, self.after_save = parts, extras, after_save
        self.validate = validate if self.cfg.val_split else None
        self.log = MetricsLog(run.out, self.d.main, step)
        self.metrics: dict = {}
        self.state: dict | None = run.state
        if self.validate is not None and step == 0:  # the untrained baseline
            self._validate(0)
        self.saved = step if run.state is not None else -1
        self.bar = tqdm(total=self.cfg.steps, initial=step, desc=run.kind,
                        disable=not (progress and self.d.main))

    def _due(self, step: int, every: int) -> bool:
        return step % every == 0 or step == self.cfg.steps

    def _validate(self, step: int) -> None:
        self.metrics = self.validate()
        self.log.write(step, "val", self.metrics)

    def _checkpoint(self, step: int) -> None:
        extras = self.extras
        if callable(extras):  # measured at save time: on rank 0 alone, which writes it
            extras = extras() if self.d.main else {}
        self.state = self.run.checkpoint(step, self.parts, extras)
        if self.d.main and self.after_save is not None:
            self.after_save(step)
        barrier(self.d)
        self.saved = step

    def step_done(self, step: int, values: dict) -> None:
        """After optimizer step `step` (1-based): values are the train scalars to log."""
        self.bar.update(1)
        if self._due(step, self.cfg.log_every):
            self.log.write(step, "train", values)
            self.bar.set_postfix(loss=f"{values['loss']:.4f}")
        if self.validate is not None and self._due(step, self.cfg.val_every):
            self._validate(step)
        if self._due(step, self.cfg.save_every):
            self._checkpoint(step)

    def finish(self, step: int) -> dict:
        """Last checkpoint if not yet written, the model folder, close everything; the last
        validation metrics."""
        if self.saved != step:
            self._checkpoint(step)
        if self.d.main:
            from fd2talk.model.store.folder import MODEL_DIR, export

            try:
                export([self.state], self.run.out / MODEL_DIR)
            except UserError as e:  # the run itself is done and saved: say so, go on
                print(f"warning: {self.run.out / CHECKPOINT} is saved but its model folder "
                      f"was not written: {e}", file=sys.stderr)
        self.bar.close()
        self.log.close()
        teardown_distributed(self.d)
        return self.metrics
