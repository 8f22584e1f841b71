"""The `fd2talk-prep` command line: help, instant start, user errors, and the model commands."""

import subprocess
import sys

import pytest
from helpers import REPO
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core.defaults import defaults

STAGES = ("clip", "crop", "coeffs", "audio", "shard", "latents", "run", "demo", "fetch-face-model")


def test_help_lists_every_stage():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in STAGES:
        assert name in result.output
    for name in STAGES:
        sub = CliRunner().invoke(app, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)


@pytest.mark.parametrize(
    "module",
    [
        "fd2talk.cli.prep",
        "fd2talk.cli.train",
        "fd2talk.cli.generate",
        "fd2talk.cli.evaluate",
        "fd2talk.cli.app",
    ],
)
def test_help_imports_no_heavy_library(module):
    """`--help` stays instant: torch, mediapipe, cv2, transformers load only when used."""
    code = (
        f"import sys; from {module} import app; "
        "heavy = [m for m in ('torch', 'mediapipe', 'cv2', 'transformers', 'webdataset') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert out == "[]"


def test_prep_options_default_to_the_config_dataclasses():
    """Every option of every `fd2talk-prep` command that names a field of the config it
    builds has that field's default (`run`: the field of every stage config that has it)."""
    import typer.main

    from fd2talk.model.data.latents import LatentsConfig
    from fd2talk.model.demo.variants import DemoConfig
    from fd2talk.pipeline.stages.audio import AudioConfig
    from fd2talk.pipeline.stages.clip import ClipConfig
    from fd2talk.pipeline.stages.coeffs import CoeffsConfig
    from fd2talk.pipeline.stages.crop import CropConfig
    from fd2talk.pipeline.stages.shard import ShardConfig

    stages = (ClipConfig, CropConfig, CoeffsConfig, AudioConfig, ShardConfig)
    commands = {
        "clip": (ClipConfig,),
        "crop": (CropConfig,),
        "coeffs": (CoeffsConfig,),
        "audio": (AudioConfig,),
        "shard": (ShardConfig,),
        "latents": (LatentsConfig,),
        "demo": (DemoConfig,),
        "run": stages,
    }
    # option -> (config, field) where the names differ
    renamed = {
        ("demo", "videos"): (DemoConfig, "n_videos"),
        ("run", "coeffs_backend"): (CoeffsConfig, "backend"),
    }
    # None: the backend follows --wav2vec2 (wav2vec2 when it is given, else the default)
    chosen_later = {("audio", "backend"), ("run", "audio_backend")}
    group = typer.main.get_command(app)
    checked = 0
    for name, classes in commands.items():
        for param in group.commands[name].params:
            if param.required or param.name == "manifest":  # inputs, not settings (run's
                continue  # --manifest is optional: --demo makes one)
            default = param.default.value if hasattr(param.default, "value") else param.default
            if (name, param.name) in chosen_later:
                assert default is None, (name, param.name)
                continue
            if (name, param.name) in renamed:
                cls, field = renamed[name, param.name]
                expected = [defaults(cls)[field]]
            else:
                expected = [defaults(c)[param.name] for c in classes if param.name in defaults(c)]
            for value in expected:
                assert default == value, (name, param.name, default, value)
            checked += bool(expected)
    assert checked >= 40, checked
    no_espeak = next(p for p in group.commands["demo"].params if p.name == "no_espeak")
    assert no_espeak.default is (not DemoConfig().use_espeak)


def _main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from fd2talk.cli.prep import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


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


def test_train_and_generate_help():
    from fd2talk.cli.train import app as train_app

    result = CliRunner().invoke(train_app, ["--help"])
    assert result.exit_code == 0
    for name in ("lipsync", "motion", "autoencoder", "frames", "export", "demo"):
        assert name in result.output
        sub = CliRunner().invoke(train_app, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)
    proc = subprocess.run(
        [sys.executable, "-c", "from fd2talk.cli.generate import main; main()"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2 and "--model" in proc.stderr  # what it needs, not a traceback
    assert "Traceback" not in proc.stderr


def test_train_options_default_to_the_config_dataclasses():
    """Every option of every `fd2talk-train` command that names a config field has that
    field's default, and the preset choices are the keys of the network's presets dict."""
    import typer.main

    from fd2talk.cli import train_options as cli
    from fd2talk.cli.train import app as train_app
    from fd2talk.model import configs
    from fd2talk.model.nets import autoencoder, frame_unet, lip_expert, motion_dit

    commands = {
        "lipsync": (configs.LipsyncTrainConfig, lip_expert.PRESETS, cli.LipPreset),
        "motion": (configs.MotionTrainConfig, motion_dit.PRESETS, cli.MotionPreset),
        "autoencoder": (configs.AutoencoderTrainConfig, autoencoder.PRESETS, cli.AutoencoderPreset),
        "frames": (configs.FramesTrainConfig, frame_unet.PRESETS, cli.UNetPreset),
    }
    group = typer.main.get_command(train_app)
    for name, (cls, presets, choices) in commands.items():
        fields = defaults(cls)
        params = {p.name: p for p in group.commands[name].params}
        checked = 0
        for pname, param in params.items():
            if pname not in fields or pname in ("shards", "out"):
                continue
            default = param.default.value if hasattr(param.default, "value") else param.default
            expected = fields[pname]
            if pname == "k" and expected is None:
                expected = -1
            assert default == expected, (name, pname, default, expected)
            checked += 1
        assert checked >= 12, (name, checked)
        assert {c.value for c in choices} == set(presets), name
        assert params["preset"].default in presets
    assert configs.AutoencoderTrainConfig(shards="s", out="o").batch_size == 8


def test_eval_help_and_a_missing_option_is_one_line():
    from fd2talk.cli.evaluate import app as eval_app

    result = CliRunner().invoke(eval_app, ["--help"])
    assert result.exit_code == 0 and "videos" in result.output and "run" in result.output
    for name, flag in (("videos", "--generated"), ("run", "--shards")):
        sub = CliRunner().invoke(eval_app, [name, "--help"])
        assert sub.exit_code == 0 and flag in sub.output and "--syncnet" in sub.output
    proc = subprocess.run(
        [sys.executable, "-c", "from fd2talk.cli.evaluate import main; main()", "run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2 and "--model" in proc.stderr and "Traceback" not in proc.stderr


def test_model_cli_module_runs_fd2talk_train():
    """`python -m fd2talk.model.cli` (what torchrun -m launches) is fd2talk-train; importing
    it runs nothing."""
    out = subprocess.run(
        [sys.executable, "-m", "fd2talk.model.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for command in ("lipsync", "motion", "autoencoder", "frames", "export", "demo"):
        assert command in out.stdout
    quiet = subprocess.run(
        [sys.executable, "-c", "import fd2talk.model.cli"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert quiet.returncode == 0 and quiet.stdout == "", quiet


@pytest.mark.parametrize("module, cls", [("generate", "Options"), ("app", "AppConfig")])
def test_generate_and_app_options_default_to_their_dataclasses(module, cls):
    """`fd2talk-generate`'s options are `Options`'s fields with its defaults, and
    `fd2talk-app`'s are `AppConfig`'s: the CLI and the library cannot disagree."""
    import importlib

    import typer.main

    from fd2talk.model.app.web import AppConfig
    from fd2talk.model.generation.options import Options

    fields = defaults({"Options": Options, "AppConfig": AppConfig}[cls])
    command = typer.main.get_command(importlib.import_module(f"fd2talk.cli.{module}").app)
    checked = 0
    for param in command.params:
        if param.name in fields:
            default = param.default.value if hasattr(param.default, "value") else param.default
            expected = fields[param.name]
            expected = expected.value if hasattr(expected, "value") else expected
            assert default == expected, (param.name, default, expected)
            checked += 1
    assert checked >= {"Options": 12, "AppConfig": 10}[cls], checked
