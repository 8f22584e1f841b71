"""The `fd2talk-prep` command line: help, instant start, user errors, and the model commands."""

import subprocess
import sys

import pytest
from conftest import REPO
from typer.testing import CliRunner

from fd2talk.pipeline.cli import app

STAGES = ("clip", "crop", "coeffs", "audio", "shard", "latents", "run", "demo",
          "fetch-face-model")


def test_help_lists_every_stage():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in STAGES:
        assert name in result.output
    for name in STAGES:
        sub = CliRunner().invoke(app, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)


@pytest.mark.parametrize("module", ["fd2talk.pipeline.cli", "fd2talk.model.cli"])
def test_help_imports_no_heavy_library(module):
    """`--help` stays instant: torch, mediapipe, cv2, transformers load only when used."""
    code = (f"import sys; from {module} import app; "
            "heavy = [m for m in ('torch', 'mediapipe', 'cv2', 'transformers', 'webdataset') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True).stdout.strip()
    assert out == "[]"


def _main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from fd2talk.pipeline.cli import main; main()",
                           *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_user_errors_are_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("key,path\nclip one,missing.mp4\n")
    for args, message in (
        (["clip", str(tmp_path / "w"), "-m", str(bad)], "m.csv:2"),
        (["clip", str(tmp_path / "w"), "-m", str(tmp_path / "nope.csv")], "does not exist"),
        (["run", str(tmp_path / "w")], "needs --manifest"),
        (["run", str(tmp_path / "w"), "--demo", "-m", str(bad)], "not both"),
        (["clip", str(tmp_path / "w"), "-m", str(bad), "--part", "5/2"], "0 <= i < n"),
        (["shard", str(tmp_path / "empty")], "no crops"),
    ):
        proc = _main(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_train_help_and_later_commands():
    from fd2talk.model.autoencoder import PRESETS as AE_PRESETS
    from fd2talk.model.cli import Preset
    from fd2talk.model.cli import app as train_app
    from fd2talk.model.frame_unet import PRESETS as UNET_PRESETS
    from fd2talk.model.lip_expert import PRESETS as EXPERT_PRESETS
    from fd2talk.model.motion_dit import PRESETS as DIT_PRESETS

    result = CliRunner().invoke(train_app, ["--help"])
    assert result.exit_code == 0
    for name in ("lipsync", "motion", "autoencoder", "frames"):
        assert name in result.output
        sub = CliRunner().invoke(train_app, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)
    assert {p.value for p in Preset} == set(DIT_PRESETS) == set(EXPERT_PRESETS) \
        == set(UNET_PRESETS) <= set(AE_PRESETS)
    proc = subprocess.run([sys.executable, "-c", "from fd2talk.model.cli import generate_main; "
                           "generate_main()"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "not implemented yet" in proc.stderr
