"""Training machinery: EMA, atomic checkpoints, resume checks, run dirs, the metrics log."""

import json

import pytest
import torch

from fd2talk.model import trainer
from fd2talk.model.errors import UserError


def test_ema_follows_the_model_with_warmup():
    model = torch.nn.Linear(2, 1)
    ema = trainer.EMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.model.parameters())
    before = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=0)  # warm-up: d = min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.model.weight, 0.1 * before + 0.9 * model.weight.detach())
    ema.update(model, step=10_000)  # d = 0.9
    w = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=10_001)
    torch.testing.assert_close(ema.model.weight, 0.9 * w + 0.1 * model.weight.detach())


def test_checkpoint_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "checkpoint.pt"
    trainer.save_checkpoint(path, {"step": 3, "w": torch.arange(4.0), "rng": trainer.rng_state()})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
    state = trainer.load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    trainer.set_rng_state(state["rng"])  # the RNG restarts where it was saved
    x = torch.rand(3)
    trainer.set_rng_state(state["rng"])
    assert torch.equal(x, torch.rand(3))
    with pytest.raises(UserError, match="not found"):
        trainer.load_checkpoint(tmp_path / "missing.pt")


def test_run_dir_rules(tmp_path):
    out = tmp_path / "run"
    assert trainer.prepare_run_dir(out, False, True, {"lr": 1}, "abc") is None
    meta = json.loads((out / "config.json").read_text())
    assert meta == {"config": {"lr": 1}, "git_revision": "abc"}
    with pytest.raises(UserError, match="no checkpoint.pt"):
        trainer.prepare_run_dir(out, True, True, {}, "abc")
    trainer.save_checkpoint(out / "checkpoint.pt", {})
    with pytest.raises(UserError, match="pass --resume"):
        trainer.prepare_run_dir(out, False, True, {}, "abc")
    assert trainer.prepare_run_dir(out, True, True, {}, "abc") == out / "checkpoint.pt"
    trainer.check_resumable({"lr": 1, "steps": 5}, {"lr": 1, "steps": 9}, ("steps",), out)
    with pytest.raises(UserError, match=r"lr: 1 -> 2"):
        trainer.check_resumable({"lr": 1}, {"lr": 2}, ("steps",), out)


def test_metrics_log_drops_rows_after_the_resumed_step(tmp_path):
    log = trainer.MetricsLog(tmp_path, main=True)
    for step in (10, 20, 30):
        log.write(step, "train", {"loss": 1.0 / step})
    log.close()
    log = trainer.MetricsLog(tmp_path, main=True, resume_step=20)
    log.write(30, "train", {"loss": 0.5})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(10, 0.1), (20, 0.05), (30, 0.5)]
    quiet = trainer.MetricsLog(tmp_path / "other", main=False)
    quiet.write(1, "train", {"loss": 1.0})
    assert not (tmp_path / "other").exists()  # only rank 0 writes


def test_single_process_defaults_to_cpu_here(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = trainer.setup_distributed("cpu")
    assert (d.rank, d.world, d.device, d.main) == (0, 1, "cpu", True)
    model = torch.nn.Linear(1, 1)
    assert trainer.wrap_ddp(model, d) is model
