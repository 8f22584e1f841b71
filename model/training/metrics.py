"""What a training run logs (DESIGN.md section 3): RUN/metrics.jsonl, one JSON row per logged
step and split (`{"step", "split": "train" | "val", ...}`), plus TensorBoard scalars (RUN/tb)
when tensorboard is installed.

A resumed run's log is truncated to the step it resumed from, so it reads as one run.
`Mean` is a logged train row: the mean of each scalar over a step's micro-batches.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

METRICS = "metrics.jsonl"


class MetricsLog:
    """Append-only metrics.jsonl (rank 0), plus TensorBoard scalars when tensorboard exists."""

    def __init__(self, out: Path, main: bool, resume_step: int = 0):
        self.main = main
        self.path = Path(out) / METRICS
        self.tb = None
        if not main:
            return
        if self.path.exists():  # drop what a killed run logged after its last checkpoint
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self.tb = SummaryWriter(str(Path(out) / "tb"), purge_step=resume_step + 1)

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.main:
            return
        row = {
            "step": step,
            "split": split,
            **{k: round(float(v), 6) if isinstance(v, float) else v for k, v in values.items()},
        }
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Mean:
    """The mean of "loss" and the other scalars over the `k` micro-batches of one step."""

    def __init__(self, k: int):
        self.k = k
        self.values: dict[str, float] = {}

    def add(self, loss: torch.Tensor, scalars: dict | None = None) -> None:
        for name, v in {"loss": float(loss.detach()), **(scalars or {})}.items():
            self.values[name] = self.values.get(name, 0.0) + float(v) / self.k
