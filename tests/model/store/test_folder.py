"""Model folders: every run writes one, `fd2talk-train export` joins runs into one, loading
gives the same model as the checkpoint, and parts that do not fit together are refused."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fd2talk.core.errors import UserError
from fd2talk.model.data import loader as data
from fd2talk.model.generation import frames as fr
from fd2talk.model.generation import motion as mo
from fd2talk.model.store import folder as pretrained


@pytest.fixture(scope="module")
def both(motion_run, frames_run, tmp_path_factory):
    """One model folder with stage 1 and stage 2, made by the CLI."""
    from fd2talk.cli.train import app

    out = tmp_path_factory.mktemp("export") / "fd2talk-demo"
    result = CliRunner().invoke(
        app, ["export", str(motion_run), str(frames_run), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "autoencoder, frames, motion" in result.output
    return out


def test_runs_write_their_model_folder(motion_run, frames_run, lip_expert, ae_run):
    for run, parts in (
        (motion_run, ["motion"]),
        (frames_run, ["frames", "autoencoder"]),
        (lip_expert[0].parent, ["lip_expert"]),
        (ae_run, ["autoencoder"]),
    ):
        index = json.loads((run / "model" / "model_index.json").read_text())
        assert index["format"] == "fd2talk-model" and set(index["parts"]) == set(parts), run
        for part in parts:
            assert (run / "model" / part / "model.safetensors").is_file()
    config = json.loads((motion_run / "model" / "motion" / "config.json").read_text())
    assert config["dataset"] == {
        "coeffs": "mediapipe",
        "exp_dim": 52,
        "audio_features": "logmel",
        "audio_dim": 80,
    }
    assert config["audio_config"]["backend"] == "logmel" and config["step"] == 600
    assert {"stats", "model_config", "diffusion", "dims", "git_revision"} <= set(config)
    ae = json.loads((frames_run / "model" / "autoencoder" / "autoencoder.json").read_text())
    assert ae["scaling_factor"] > 0 and len(ae["fingerprint"]) == 64


def test_the_folder_samples_exactly_what_the_checkpoints_do(
    both, motion_run, frames_run, demo_work
):
    clip = next(
        data.iter_clips(demo_work / "shards", "test", ("exp", "pose", "audio", "valid", "mp4"))
    )
    a = mo.sample(mo.load_motion(both, "cpu"), clip["audio"][:40], steps=5)
    b = mo.sample(mo.load_motion(motion_run / "checkpoint.pt", "cpu"), clip["audio"][:40], steps=5)
    np.testing.assert_array_equal(a["exp"], b["exp"])
    ref = torch.zeros(3, 64, 64)
    x = torch.cat(
        list(
            fr.iter_frames(
                fr.load_frames(both, "cpu"), ref, clip["exp"][:3], clip["pose"][:3], steps=3
            )
        )
    )
    y = torch.cat(
        list(
            fr.iter_frames(
                fr.load_frames(frames_run / "checkpoint.pt", "cpu"),
                ref,
                clip["exp"][:3],
                clip["pose"][:3],
                steps=3,
            )
        )
    )
    assert torch.equal(x, y)
    parts = pretrained.load_parts([both])
    assert set(parts) == {"motion", "frames", "autoencoder"}
    # the fingerprint is the network, not the bookkeeping
    moved = pretrained.ModelPart(
        "motion", {**parts["motion"].config, "step": 1}, parts["motion"].weights, "x"
    )
    assert pretrained.fingerprint(moved) == pretrained.fingerprint(parts["motion"])


def _edit(folder, part, change):
    path = folder / part / ("autoencoder.json" if part == "autoencoder" else "config.json")
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_parts_that_do_not_fit_together_are_refused(both, motion_run, frames_run, tmp_path):
    deep3d = tmp_path / "deep3d"
    shutil.copytree(frames_run / "model", deep3d)
    _edit(deep3d, "frames", lambda c: c["dataset"].update(coeffs="deep3d", exp_dim=64))
    with pytest.raises(
        UserError,
        match=r"stage-1 model .*motion.* makes mediapipe "
        r"coefficients \(52-d.* stage-2 model .*deep3d.* "
        r"deep3d coefficients \(64-d",
    ):
        pretrained.load_parts([motion_run, deep3d])
    with pytest.raises(UserError, match="stage-1 model"):
        pretrained.export([motion_run, deep3d], tmp_path / "never")
    assert not (tmp_path / "never").exists()
    # a stage 2 beside another autoencoder (a real one, with its own fingerprint)
    from fd2talk.model.nets.autoencoder import RefAutoencoder

    ae = RefAutoencoder.load(frames_run / "model" / "autoencoder")
    with torch.no_grad():
        next(ae.parameters()).add_(0.01)
    ae.save(tmp_path / "ae2")
    mixed = {p.name: p for p in pretrained.read_parts(frames_run)}
    mixed["autoencoder"] = pretrained.autoencoder_part(tmp_path / "ae2")
    pretrained.write_folder(mixed, tmp_path / "mixed")  # writing checks nothing; loading does
    with pytest.raises(UserError, match="trained with autoencoder .* but .* is autoencoder"):
        pretrained.load_parts([tmp_path / "mixed"])
    # a folder whose autoencoder.json states another fingerprint than its weights have
    lying = tmp_path / "lying"
    shutil.copytree(frames_run / "model", lying)
    _edit(lying, "autoencoder", lambda c: c.update(fingerprint="0" * 64))
    with pytest.raises(UserError, match="not the autoencoder its autoencoder.json describes"):
        pretrained.load_parts([lying])
    with pytest.raises(UserError, match="hold a motion model: give one"):
        pretrained.load_parts([motion_run, both])


def test_damaged_or_missing_folders_say_what_to_do(both, tmp_path):
    for source, message in (
        (tmp_path / "nowhere", "not found: expected a model folder"),
        (tmp_path, "holds no model"),
    ):
        with pytest.raises(UserError, match=message):
            pretrained.load_parts([source])
    broken = tmp_path / "broken"
    shutil.copytree(both, broken)
    (broken / "motion" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="damaged"):
        pretrained.load_parts([broken])
    shutil.rmtree(broken / "motion")
    with pytest.raises(UserError, match="copy the whole model folder"):
        pretrained.load_parts([broken])
    with pytest.raises(UserError, match="holds no motion model .it has: autoencoder, frames"):
        mo.load_motion(_frames_only(both, tmp_path), "cpu")


def test_export_replaces_only_model_folders(both, motion_run, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a model folder"):
        pretrained.export([motion_run], precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    again = tmp_path / "again"
    shutil.copytree(both, again)
    pretrained.export([motion_run], again)  # a model folder is replaced as a whole
    assert set(json.loads((again / "model_index.json").read_text())["parts"]) == {"motion"}
    assert not (again / "frames").exists() and not list(tmp_path.glob(".again*"))


def test_a_frames_checkpoint_whose_autoencoder_moved(frames_run, ae_run, tmp_path):
    state = torch.load(frames_run / "checkpoint.pt", weights_only=False)
    state["extras"]["autoencoder_path"] = str(tmp_path / "moved_away")
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="which is gone: put it back, or pass the autoencoder"):
        fr.load_frames(tmp_path / "checkpoint.pt", "cpu")
    model = fr.load_frames(
        tmp_path / "checkpoint.pt", "cpu", autoencoder=str(ae_run / "autoencoder")
    )
    assert model.step == state["step"]


def _frames_only(both, tmp_path):
    out = tmp_path / "frames_only"
    pretrained.write_folder(
        {k: v for k, v in pretrained.load_parts([both]).items() if k != "motion"}, out
    )
    return out
