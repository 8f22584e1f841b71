"""A generation job's options: what cannot work is refused with the CLI's message, and the
word choices are string enums whose values are the CLI's words."""

import json

import pytest

from fd2talk.core.errors import UserError
from fd2talk.model.generation.options import Noise, Options, PoseMode
from fd2talk.model.solvers import Solver


def test_options_refuse_what_cannot_work():
    for bad, match in [
        (dict(steps=0), "--steps"),
        (dict(batch_size=0), "--batch-size"),
        (dict(solver="euler"), "--solver"),
        (dict(pose="wobbly"), "--pose"),
        (dict(solver="dpm++", eta=0.5), "--eta > 0 needs"),
        (dict(pose_scale=-1), "scale"),
        (dict(size=33), "--size"),
    ]:
        with pytest.raises(UserError, match=match):
            Options(**bad)


def test_the_choices_are_the_command_lines_words():
    assert [s.value for s in Solver] == ["ddim", "dpm++"]
    assert [n.value for n in Noise] == ["shared", "independent"]
    assert json.dumps([Solver.dpm, Noise.shared]) == '["dpm++", "shared"]'
    assert f"{PoseMode.source}clip.npz" == "from:clip.npz"
    default = Options()
    assert (default.solver, default.noise, default.pose) == ("ddim", "shared", "generated")
    assert Options(solver="dpm++").solver == Solver.dpm  # the words work as well
    assert default.pose_mode is PoseMode.generated
    assert Options(pose="still").pose_mode is PoseMode.still
    driven = Options(pose="from:runs/a b.npz")
    assert driven.pose_mode is PoseMode.source and driven.pose_source == "runs/a b.npz"
