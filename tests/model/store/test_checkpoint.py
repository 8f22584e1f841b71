"""The checkpoint format: atomic writes, the one reader's checks, the resume rule."""

import pytest
import torch

from fd2talk.core.errors import UserError
from fd2talk.model.store import checkpoint as C


def test_checkpoint_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / C.CHECKPOINT
    state = {"format": C.CHECKPOINT_FORMAT, "kind": "motion", "step": 3, "w": torch.arange(4.0)}
    C.save_checkpoint(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
    state = C.load_checkpoint(path, "motion")
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    with pytest.raises(UserError, match="not found"):
        C.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="'motion' checkpoint, not a frames checkpoint"):
        C.load_checkpoint(path, "frames")
    C.save_checkpoint(path, {**state, "format": None})
    with pytest.raises(UserError, match="older fd2talk"):
        C.load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(UserError, match="not an fd2talk checkpoint"):
        C.load_checkpoint(path)


def test_one_schema_for_every_trainer():
    state = C.checkpoint_state(
        "frames",
        {"lr": 1},
        "abc",
        5,
        2,
        models={"unet": {}},
        ema={"unet": {}},
        optimizers={"unet": {}},
        ranks=[{}, {}],
        extras={"stats": 1},
    )
    assert list(state) == [
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
    ]
    assert state["format"] == C.CHECKPOINT_FORMAT and state["world"] == 2


def test_a_resume_must_keep_every_setting_but_the_resumable_ones(tmp_path):
    out = tmp_path / C.CHECKPOINT
    C.check_resumable({"lr": 1, "steps": 5}, {"lr": 1, "steps": 9}, ("steps",), out)
    with pytest.raises(UserError, match=r"lr: 1 -> 2"):
        C.check_resumable({"lr": 1}, {"lr": 2}, ("steps",), out)
    # a setting added after the checkpoint was written counts as its default (what that run
    # used); set to anything else, it is a change
    C.check_resumable({"lr": 1}, {"lr": 1, "single_dit": False}, (), out, {"single_dit": False})
    with pytest.raises(UserError, match="single_dit: False -> True"):
        C.check_resumable({"lr": 1}, {"lr": 1, "single_dit": True}, (), out, {"single_dit": False})
