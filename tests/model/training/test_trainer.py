"""Training machinery: EMA, atomic checkpoints, resume checks, run dirs, the metrics log."""

import json

import pytest
import torch

from fd2talk.core.errors import UserError
from fd2talk.model.training import trainer


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
    state = {"format": trainer.CHECKPOINT_FORMAT, "kind": "motion", "step": 3,
             "w": torch.arange(4.0), "rng": trainer.rng_state()}
    trainer.save_checkpoint(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
    state = trainer.load_checkpoint(path, "motion")
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    trainer.set_rng_state(state["rng"])  # the RNG restarts where it was saved
    x = torch.rand(3)
    trainer.set_rng_state(state["rng"])
    assert torch.equal(x, torch.rand(3))
    with pytest.raises(UserError, match="not found"):
        trainer.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="'motion' checkpoint, not a frames checkpoint"):
        trainer.load_checkpoint(path, "frames")
    trainer.save_checkpoint(path, {**state, "format": None})
    with pytest.raises(UserError, match="older fd2talk"):
        trainer.load_checkpoint(path)


def _cfg(out, **kw) -> trainer.RunConfig:
    return trainer.RunConfig(shards="s", out=str(out), device="cpu", **kw)


def _model_parts(seed: int) -> trainer.Parts:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return trainer.Parts({"net": net}, {"net": opt}, {"net": trainer.EMA(net, 0.9)},
                         torch.Generator().manual_seed(seed))


def test_start_run_checks_before_it_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        trainer.start_run(_cfg(out, preset="huge"), "motion", False, {"tiny": 1})
    with pytest.raises(UserError, match="no checkpoint.pt"):
        trainer.start_run(_cfg(out), "motion", True)
    run = trainer.start_run(_cfg(out, steps=5), "motion", False)
    assert not out.exists()  # every check passed, nothing written yet
    run.open()
    meta = json.loads((out / "config.json").read_text())
    assert meta["kind"] == "motion" and meta["config"]["steps"] == 5
    parts = _model_parts(0)
    saved = run.checkpoint(2, parts, {"stats": [1, 2]})
    assert set(saved) == {"format", "kind", "config", "git_revision", "step", "world", "models",
                          "ema", "optimizers", "ranks", "extras"}
    with pytest.raises(UserError, match="pass --resume"):
        trainer.start_run(_cfg(out), "motion", False)
    config_before = (out / "config.json").read_bytes()
    for cfg, kind, message in ((_cfg(out, seed=1), "motion", r"seed: 0 -> 1"),
                               (_cfg(out), "frames", "not a frames checkpoint")):
        with pytest.raises(UserError, match=message):
            trainer.start_run(cfg, kind, True)
    assert (out / "config.json").read_bytes() == config_before  # a refused resume wrote nothing
    resumed = trainer.start_run(_cfg(out, steps=9), "motion", True)  # steps may change
    assert resumed.extras == {"stats": [1, 2]}
    with pytest.raises(UserError, match="checkpoint.pt: dims differ"):
        resumed.refuse("dims differ")
    fresh = _model_parts(1)
    assert resumed.restore(fresh) == 2
    for a, b in ((parts.models["net"], fresh.models["net"]),
                 (parts.emas["net"].model, fresh.emas["net"].model)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                     b.state_dict().values(), strict=True))
    assert str(parts.optimizers["net"].state_dict()) == str(fresh.optimizers["net"].state_dict())
    assert torch.equal(parts.generator.get_state(), fresh.generator.get_state())
    trainer.check_resumable({"lr": 1, "steps": 5}, {"lr": 1, "steps": 9}, ("steps",), out)
    with pytest.raises(UserError, match=r"lr: 1 -> 2"):
        trainer.check_resumable({"lr": 1}, {"lr": 2}, ("steps",), out)
    # a setting added after the checkpoint was written counts as its default (what that run
    # used); set to anything else, it is a change
    trainer.check_resumable({"lr": 1}, {"lr": 1, "single_dit": False}, (), out,
                            {"single_dit": False})
    with pytest.raises(UserError, match="single_dit: False -> True"):
        trainer.check_resumable({"lr": 1}, {"lr": 1, "single_dit": True}, (), out,
                                {"single_dit": False})


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
    """`auto` (the default) picks the CPU on a machine without CUDA: a plain launch is one
    process on the CPU, and nothing is wrapped in DDP."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    d = trainer.setup_distributed(trainer.RunConfig(shards="s", out="o").device)
    assert (d.rank, d.world, d.device, d.main) == (0, 1, "cpu", True)
    model = torch.nn.Linear(1, 1)
    assert trainer.wrap_ddp(model, d) is model


def test_accumulated_micro_batches_give_the_big_batch_gradient_and_sync_once(tmp_path):
    """Two micro-batches of 4 with `accumulate` = one batch of 8 (the mean loss), also inside
    a real (1-process, gloo) DDP wrapper, whose all-reduce runs on the last micro-batch only."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8, 1)

    def net():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))

    big = net()
    torch.nn.functional.mse_loss(big(x), y).backward()
    small = net()
    values = trainer.accumulate([small], 2, lambda i: (
        torch.nn.functional.mse_loss(small(x[4 * i:4 * i + 4]), y[4 * i:4 * i + 4]),
        {"n": float(i)}))
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert values["n"] == 0.5 and set(values) == {"loss", "n"}

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        inner = net()
        ddp = DistributedDataParallel(inner)
        syncs = []
        real = ddp.no_sync
        ddp.no_sync = lambda: (syncs.append(1), real())[1]
        trainer.accumulate([ddp], 3, lambda i: (
            torch.nn.functional.mse_loss(ddp(x[2 * i:2 * i + 2]), y[2 * i:2 * i + 2]), {}))
        assert len(syncs) == 2  # micro-batches 0 and 1 skip the all-reduce, 2 does it
        ref = net()
        for i in range(3):
            (torch.nn.functional.mse_loss(ref(x[2 * i:2 * i + 2]), y[2 * i:2 * i + 2]) / 3
             ).backward()
        for a, b in zip(ref.parameters(), inner.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    finally:
        dist.destroy_process_group()
