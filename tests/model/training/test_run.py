"""The run layer: every check before anything is written, one checkpoint schema, restore, and
when a loop logs, validates and saves."""

import json

import pytest
import torch

from fd2talk.core.errors import UserError
from fd2talk.model.configs import RunConfig
from fd2talk.model.training.ema import EMA
from fd2talk.model.training.run import Parts, start_run


def _cfg(out, **kw) -> RunConfig:
    return RunConfig(shards="s", out=str(out), device="cpu", **kw)


def _model_parts(seed: int) -> Parts:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return Parts(
        {"net": net}, {"net": opt}, {"net": EMA(net, 0.9)}, torch.Generator().manual_seed(seed)
    )


def test_start_run_checks_before_it_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        start_run(_cfg(out, preset="huge"), "motion", False, {"tiny": 1})
    with pytest.raises(UserError, match="no checkpoint.pt"):
        start_run(_cfg(out), "motion", True)
    with pytest.raises(UserError, match="--accumulate must be at least 1"):
        start_run(_cfg(out, accumulate=0), "motion", False)
    run = start_run(_cfg(out, steps=5), "motion", False)
    assert not out.exists()  # every check passed, nothing written yet
    run.begin(0)
    meta = json.loads((out / "config.json").read_text())
    assert meta["kind"] == "motion" and meta["config"]["steps"] == 5
    assert run.saved == -1  # a fresh run has no checkpoint yet
    parts = _model_parts(0)
    saved = run.save(2, parts, {"stats": [1, 2]})
    assert set(saved) == {
        "format",
        "kind",
        "config",
        "git_revision",
        "step",
        "world",
        "models",
        "ema",
        "optimizers",
        "ranks",
        "extras",
    }
    assert (run.saved, run.last) == (2, saved)
    with pytest.raises(UserError, match="pass --resume"):
        start_run(_cfg(out), "motion", False)
    config_before = (out / "config.json").read_bytes()
    for cfg, kind, message in (
        (_cfg(out, seed=1), "motion", r"seed: 0 -> 1"),
        (_cfg(out), "frames", "not a frames checkpoint"),
    ):
        with pytest.raises(UserError, match=message):
            start_run(cfg, kind, True)
    assert (out / "config.json").read_bytes() == config_before  # a refused resume wrote nothing
    resumed = start_run(_cfg(out, steps=9), "motion", True)  # steps may change
    assert resumed.extras == {"stats": [1, 2]}
    with pytest.raises(UserError, match="checkpoint.pt: dims differ"):
        resumed.refuse("dims differ")
    fresh = _model_parts(1)
    assert resumed.restore(fresh) == 2
    for a, b in (
        (parts.models["net"], fresh.models["net"]),
        (parts.emas["net"].model, fresh.emas["net"].model),
    ):
        assert all(
            torch.equal(x, y)
            for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )
    assert str(parts.optimizers["net"].state_dict()) == str(fresh.optimizers["net"].state_dict())
    assert torch.equal(parts.generator.get_state(), fresh.generator.get_state())
    resumed.begin(2)
    assert resumed.saved == 2  # the checkpoint resumed from counts as saved
    assert not (out / "model").exists()


def test_log_validate_and_save_every_so_many_steps_and_at_the_last(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run = start_run(
        _cfg(tmp_path / "a", steps=10, log_every=3, val_every=4, save_every=5), "motion", False
    )
    due = {
        name: [s for s in range(1, 11) if getattr(run, f"should_{name}")(s)]
        for name in ("log", "validate", "save")
    }
    assert due == {"log": [3, 6, 9, 10], "validate": [4, 8, 10], "save": [5, 10]}
    quiet = start_run(_cfg(tmp_path / "b", steps=10, val_split=None), "motion", False)
    assert not any(quiet.should_validate(s) for s in range(11))  # --val-split none
