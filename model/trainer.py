"""Training machinery shared by every `fd2talk-train` command (DESIGN.md section 3).

- `setup_distributed`: one process per device under `torchrun` (NCCL on CUDA, gloo on CPU), or a
  single process when launched plainly.
- `EMA`: an exponential moving average of a model's weights, with the usual warm-up
  `decay_t = min(decay, (1 + t) / (10 + t))` so short runs are not dominated by the init.
- Checkpoints: one file holding everything a bit-for-bit resume needs (models, EMAs,
  optimizers, step, RNG states, normalisation statistics, the resolved config and git revision),
  written atomically by rank 0; `check_resumable` refuses a checkpoint whose settings differ.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .device import resolve_device
from .errors import UserError

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RUN_CONFIG = "config.json"


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Settings every `fd2talk-train` command shares (each command's config extends it)."""

    shards: str  # the shard folder fd2talk-prep wrote
    out: str  # the run directory
    preset: str = "tiny"
    steps: int = 2000
    batch_size: int = 32  # 25-frame windows per step (per process)
    val_split: str | None = "val"  # None: no validation
    val_every: int = 250
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # DataLoader worker processes
    epoch_batches: int = 500  # batches per data epoch (a re-seed point of the stream)


# settings a resumed run may change: how long it runs, where and how it reports
RESUMABLE = ("steps", "out", "log_every", "val_every", "save_every", "workers", "device")


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


def restore_rngs(state: dict | None, gen: torch.Generator | None = None) -> int:
    """The step a run starts at: 0 when fresh; when resumed, the checkpoint's step, with the
    global RNGs and `gen` (saved as "generator") put back as the checkpoint left them."""
    if not state:
        return 0
    if gen is not None:
        gen.set_state(state["generator"])
    set_rng_state(state["rng"])
    return state["step"]


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file beside `path`, fsync, rename: never a half-written checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, what: str = "checkpoint") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    return torch.load(path, map_location="cpu", weights_only=False)


def config_dict(config) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def check_resumable(saved: dict, current: dict, ignore: tuple[str, ...], path: Path) -> None:
    """Refuse to resume when a setting other than `ignore` (steps, logging…) changed."""
    diff = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
            if k not in ignore and saved.get(k) != current.get(k)]
    if diff:
        raise UserError(f"{path} was trained with other settings ({'; '.join(diff)}): resume with "
                        "the same settings, or start a new run in another --out directory")


def prepare_run_dir(out: Path, resume: bool, main: bool, config: dict, git: str) -> Path | None:
    """The checkpoint to resume from (or None). Rank 0 writes config.json (settings + revision)."""
    out = Path(out)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise UserError(f"{out} already holds a run ({ckpt.name}): pass --resume to continue it, "
                        "or choose another --out")
    if resume and not ckpt.exists():
        raise UserError(f"--resume: no {CHECKPOINT} in {out} to resume from")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{RUN_CONFIG}.tmp"
        tmp.write_text(json.dumps({"config": config, "git_revision": git}, indent=2) + "\n")
        os.replace(tmp, out / RUN_CONFIG)
    return ckpt if resume else None


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
    """The bookkeeping around an explicit training loop: progress bar, metrics log, validation
    (at step 0 of a fresh run and every `val_every` steps), checkpoints (every `save_every`
    steps, at the last step, and at the end even when no step ran: `--steps 0` writes the
    untrained baseline), and the distributed teardown. The loop itself stays in each trainer:

        loop = RunLoop(cfg, d, step, resumed, "motion", progress, validate, checkpoint)
        while step < cfg.steps:
            ...one optimizer step...
            step += 1
            loop.step_done(step, {"loss": ..., ...})
        return loop.finish(step)
    """

    def __init__(self, cfg: RunConfig, d: Dist, step: int, resumed: bool, desc: str,
                 progress: bool, validate, checkpoint):
        from tqdm import tqdm

        self.cfg, self.d = cfg, d
        self.validate = validate if cfg.val_split else None
        self.checkpoint = checkpoint
        self.log = MetricsLog(Path(cfg.out), d.main, step)
        self.metrics: dict = {}
        if self.validate is not None and step == 0:  # the untrained baseline
            self._validate(0)
        self.saved = step if resumed else -1
        self.bar = tqdm(total=cfg.steps, initial=step, desc=desc,
                        disable=not (progress and d.main))

    def _due(self, step: int, every: int) -> bool:
        return step % every == 0 or step == self.cfg.steps

    def _validate(self, step: int) -> None:
        self.metrics = self.validate()
        self.log.write(step, "val", self.metrics)

    def step_done(self, step: int, values: dict) -> None:
        """After optimizer step `step` (1-based): values are the train scalars to log."""
        self.bar.update(1)
        if self._due(step, self.cfg.log_every):
            self.log.write(step, "train", values)
            self.bar.set_postfix(loss=f"{values['loss']:.4f}")
        if self.validate is not None and self._due(step, self.cfg.val_every):
            self._validate(step)
        if self._due(step, self.cfg.save_every):
            self.checkpoint()
            self.saved = step

    def finish(self, step: int) -> dict:
        """Last checkpoint if not yet written, close everything; the last validation metrics."""
        if self.saved != step:
            self.checkpoint()
        self.bar.close()
        self.log.close()
        teardown_distributed(self.d)
        return self.metrics
