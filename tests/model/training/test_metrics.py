"""metrics.jsonl: rank 0 alone, truncated to a resumed step; the mean over micro-batches."""

import json

import torch

from fd2talk.model.training.metrics import Mean, MetricsLog


def test_metrics_log_drops_rows_after_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path, main=True)
    for step in (10, 20, 30):
        log.write(step, "train", {"loss": 1.0 / step})
    log.close()
    log = MetricsLog(tmp_path, main=True, resume_step=20)
    log.write(30, "train", {"loss": 0.5})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(10, 0.1), (20, 0.05), (30, 0.5)]
    quiet = MetricsLog(tmp_path / "other", main=False)
    quiet.write(1, "train", {"loss": 1.0})
    assert not (tmp_path / "other").exists()  # only rank 0 writes


def test_mean_over_micro_batches():
    mean = Mean(2)
    mean.add(torch.tensor(1.0), {"n": 0.0})
    mean.add(torch.tensor(3.0, requires_grad=True), {"n": 1.0})
    assert mean.values == {"loss": 2.0, "n": 0.5} and list(mean.values) == ["loss", "n"]
