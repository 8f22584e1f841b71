"""Stage `audio`: crops -> float16 (F, D) features, F exactly the crop's frame count; skips for
bad audio; resume; the CLI; peak memory on long input."""

import json
import subprocess
import wave

import numpy as np
import pytest
from helpers import SHARED_CLIPS
from helpers.audio import frame_rms, save_model, voiced
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core import media
from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.stages.audio import (
    AudioConfig,
    AudioStage,
    feature_info,
    make_encoder,
    measure_peak_memory,
)


def write_wav(path, x):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def make_crop(work, key, frames, audio=None, pad_audio=True):
    """crops/<key>.mp4 (256x256 25 fps x264, 16 kHz mono AAC like the crop stage) + json."""
    crops = work / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    mp4 = crops / f"{key}.mp4"
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=256x256:rate={FPS}"]
    if audio is not None:
        cmd += ["-i", str(write_wav(work / f"{key}.wav", audio))]
        if pad_audio:
            cmd += ["-af", "apad"]
        cmd += media.as_args(media.AAC)
    cmd += [
        "-frames:v",
        str(frames),
        "-t",
        f"{frames / FPS:.6f}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(mp4),
    ]
    subprocess.run(cmd, check=True, timeout=120)
    assert media.count_frames(mp4) == frames
    (crops / f"{key}.json").write_text(json.dumps({"key": key, "frames": frames, "fps": FPS}))
    return mp4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("w2v") / "tiny")


@pytest.fixture(scope="module")
def crops_work(tmp_path_factory):
    """Three crops with speech-like audio, 1.0 s, 2.36 s (59 frames) and 3 s long."""
    work = tmp_path_factory.mktemp("work")
    for key, frames in (("a_f000_t0", 25), ("b_f000_t0", 59), ("b_f000_t1", 75)):
        make_crop(work, key, frames, voiced(frames / FPS, seed=frames))
    return work


def _outputs(work):
    return {p.name: p.read_bytes() for p in sorted((work / "audio").glob("*.npy"))}


def test_logmel_stage_exact_frames_resume_and_determinism(crops_work):
    work = crops_work
    summary = run_stage(AudioStage(AudioConfig()), work, progress=False)
    assert summary.done == 3 and summary.ok, summary.failures
    for p in (work / "crops").glob("*.json"):
        feats = np.load(work / "audio" / f"{p.stem}.npy")
        assert feats.dtype == np.float16 and feats.shape == (
            json.loads(p.read_text())["frames"],
            80,
        )
        assert np.isfinite(feats).all()
    first = _outputs(work)
    again = run_stage(AudioStage(AudioConfig()), work, progress=False)  # a re-run: nothing to do
    assert (again.done, again.already) == (0, 3) and _outputs(work) == first
    for p in (work / "audio").glob("*.npy"):  # redo from scratch: byte-identical
        p.unlink()
    for p in (work / "status" / "audio").glob("*_t*.json"):
        p.unlink()
    redo = run_stage(AudioStage(AudioConfig()), work, workers=2, progress=False)  # a pool
    assert redo.done == 3 and _outputs(work) == first


def test_features_follow_the_audio_through_aac(tmp_path):
    """A burst in frames [30, 50) of a 100-frame crop shows up in rows 30..49 after AAC."""
    x = np.zeros(100 * 640, np.float32)
    x[30 * 640 : 50 * 640] = voiced(0.8, seed=1)[: 20 * 640] * 2
    make_crop(tmp_path, "burst", 100, x)
    assert run_stage(AudioStage(AudioConfig()), tmp_path, progress=False).done == 1
    energy = np.load(tmp_path / "audio" / "burst.npy").astype(np.float32).mean(1)
    assert (
        energy[31:49].min() > energy[:28].max() + 5 and energy[31:49].min() > energy[52:].max() + 5
    )


def test_wav2vec2_stage_equals_the_encoder(crops_work, tiny_dir, tmp_path):
    work = tmp_path / "w"
    (work / "crops").mkdir(parents=True)
    for p in (crops_work / "crops").iterdir():
        (work / "crops" / p.name).symlink_to(p)
    cfg = AudioConfig(
        backend="wav2vec2", wav2vec2=tiny_dir, device="cpu", chunk_seconds=1.0, context_seconds=0.4
    )
    summary = run_stage(AudioStage(cfg), work, progress=False)
    assert summary.done == 3 and summary.ok, summary.failures
    assert feature_info(cfg)["dim"] == 64 and feature_info(cfg)["backend"] == "wav2vec2"
    enc = make_encoder(cfg)
    for key, frames in (("a_f000_t0", 25), ("b_f000_t1", 75)):
        feats = np.load(work / "audio" / f"{key}.npy")
        assert feats.dtype == np.float16 and feats.shape == (frames, 64)
        direct = enc.features(media.read_audio(work / "crops" / f"{key}.mp4", 60), frames)
        np.testing.assert_allclose(feats.astype(np.float32), direct, atol=2e-3, rtol=2e-3)
    status = json.loads((work / "status" / "audio" / "config.json").read_text())
    assert status["backend"] == "wav2vec2" and status["wav2vec2"] == tiny_dir


def test_bad_audio_is_skipped_with_a_reason(tmp_path):
    make_crop(tmp_path, "short_audio", 75, voiced(1.0), pad_audio=False)  # 1 s audio, 3 s video
    make_crop(tmp_path, "silent_film", 50, None)  # no audio stream
    make_crop(tmp_path, "ok", 50, voiced(2.0))
    (tmp_path / "crops" / "empty.mp4").write_bytes(b"")
    (tmp_path / "crops" / "empty.json").write_text(json.dumps({"key": "empty", "frames": 50}))
    summary = run_stage(AudioStage(AudioConfig()), tmp_path, progress=False)
    assert summary.ok and summary.done == 1, summary.failures
    reasons = {
        r["key"]: r["reason"]
        for r in map(
            json.loads, (tmp_path / "status" / "audio" / "failures.jsonl").read_text().splitlines()
        )
    }
    assert reasons == {
        "short_audio": "av_length_mismatch",
        "silent_film": "no_audio_stream",
        "empty": "empty_file",
    }
    assert sorted(p.name for p in (tmp_path / "audio").glob("*.npy")) == ["ok.npy"]


def test_av_tolerance_lets_small_gaps_through(tmp_path):
    make_crop(tmp_path, "gap", 75, voiced(2.9), pad_audio=False)  # 0.1 s short: padded
    assert run_stage(AudioStage(AudioConfig()), tmp_path, progress=False).done == 1
    assert np.load(tmp_path / "audio" / "gap.npy").shape == (75, 80)


def test_config_errors_are_prep_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("FD2TALK_WAV2VEC2", raising=False)
    with pytest.raises(PrepError, match="logmel, wav2vec2"):
        AudioStage(AudioConfig(backend="mfcc"))
    with pytest.raises(PrepError, match="needs a model"):
        AudioStage(AudioConfig(backend="wav2vec2"))
    with pytest.raises(PrepError, match="does not exist"):
        AudioStage(AudioConfig(backend="wav2vec2", wav2vec2=str(tmp_path / "missing")))
    with pytest.raises(PrepError, match="chunk-seconds > 0"):
        AudioStage(AudioConfig(chunk_seconds=0))
    with pytest.raises(PrepError, match="only used by"):
        AudioStage(AudioConfig(wav2vec2=str(tmp_path)))


def test_model_path_from_the_environment(tiny_dir, monkeypatch):
    monkeypatch.setenv("FD2TALK_WAV2VEC2", tiny_dir)
    assert AudioStage(AudioConfig(backend="wav2vec2")).config.wav2vec2 == tiny_dir


def test_cli(crops_work, tiny_dir, tmp_path):
    runner = CliRunner()
    work = tmp_path / "cli"
    (work / "crops").mkdir(parents=True)
    for p in (crops_work / "crops").iterdir():
        (work / "crops" / p.name).symlink_to(p)
    res = runner.invoke(app, ["audio", str(work), "--quiet"])
    assert res.exit_code == 0, res.output
    assert np.load(work / "audio" / "b_f000_t0.npy").shape == (59, 80)
    res = runner.invoke(
        app,
        [
            "audio",
            str(work),
            "--wav2vec2",
            tiny_dir,
            "--quiet",
            "--force",
            "--device",
            "cpu",
            "--layer",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.load(work / "audio" / "b_f000_t0.npy").shape == (59, 64)
    res = runner.invoke(app, ["audio", str(work), "--wav2vec2", str(tmp_path / "none")])
    assert isinstance(res.exception, PrepError) and "save_pretrained" in str(res.exception)


def test_cli_defaults_match_the_config():
    import inspect

    from fd2talk.cli import prep as cli

    params = inspect.signature(cli.audio).parameters
    cfg = AudioConfig()
    for name in (
        "layer",
        "chunk_seconds",
        "context_seconds",
        "batch_size",
        "av_tolerance",
        "device",
    ):
        assert params[name].default == getattr(cfg, name), name


@pytest.mark.parametrize("name", SHARED_CLIPS)
def test_real_clip(shared_media, tmp_path, name):
    """A real talking clip made into a crop the way the crop stage writes it."""
    crops = tmp_path / "crops"
    crops.mkdir()
    mp4 = crops / "talk10.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(shared_media / name),
            "-vf",
            "scale=256:256,fps=25",
            *media.as_args(media.X264),
            *media.as_args(media.AAC),
            str(mp4),
        ],
        check=True,
        timeout=120,
    )
    frames = media.count_frames(mp4)
    (crops / "talk10.json").write_text(json.dumps({"key": "talk10", "frames": frames, "fps": 25}))
    assert run_stage(AudioStage(AudioConfig()), tmp_path, progress=False).done == 1
    feats = np.load(tmp_path / "audio" / "talk10.npy").astype(np.float32)
    assert feats.shape == (frames, 80)
    x = media.read_audio(mp4, 60)
    r = np.corrcoef(feats.mean(1), np.log(frame_rms(x, frames) + 1e-4))[0, 1]
    assert r > 0.8, r


@pytest.mark.slow
def test_peak_memory_of_a_long_input_is_bounded(tiny_dir):
    """The measurement the bench runs on 10 minutes with a base-size model, here 2 minutes tiny."""
    cfg = AudioConfig(backend="wav2vec2", wav2vec2=tiny_dir, device="cpu")
    out = measure_peak_memory(cfg, seconds=120.0)
    assert out["frames"] == out["frames_written"] == 3000
    assert out["after_setup_mb"] < out["peak_mb"] < 1500, out
    assert out["peak_mb"] - out["after_setup_mb"] < 300, out  # the work itself, past the imports


def test_float16_overflow_is_a_non_finite_skip(crops_work, tmp_path):
    """A model whose features overflow float16 is skipped (non_finite_values), not a crash."""
    import torch
    from transformers import Wav2Vec2Model

    src = tmp_path / "loud"
    model = Wav2Vec2Model.from_pretrained(save_model(tmp_path / "tiny")).eval()
    with torch.no_grad():
        model.encoder.layers[-1].final_layer_norm.bias.fill_(1e6)  # > float16's 65504
    model.save_pretrained(src)
    work = tmp_path / "w"
    (work / "crops").mkdir(parents=True)
    for p in (crops_work / "crops").glob("a_f000_t0.*"):
        (work / "crops" / p.name).symlink_to(p)
    cfg = AudioConfig(backend="wav2vec2", wav2vec2=str(src), device="cpu")
    summary = run_stage(AudioStage(cfg), work, progress=False)
    assert summary.failed == 0 and summary.skipped == {"non_finite_values": 1}, summary.failures
    rec = json.loads((work / "status" / "audio" / "a_f000_t0.json").read_text())
    assert rec["reason"] == "non_finite_values" and "float16" in rec["detail"]
    assert not (work / "audio" / "a_f000_t0.npy").exists()


def test_batch_size_zero_is_resolved_in_the_recorded_config(crops_work, tiny_dir, tmp_path):
    """batch_size 0 means 1 on the CPU: recorded as 1, so a run with 4 is refused on resume."""
    work = tmp_path / "w"
    (work / "crops").mkdir(parents=True)
    for p in (crops_work / "crops").glob("a_f000_t0.*"):
        (work / "crops" / p.name).symlink_to(p)
    cfg = AudioConfig(backend="wav2vec2", wav2vec2=tiny_dir, device="cpu")
    stage = AudioStage(cfg)
    assert stage.config.batch_size == 1
    assert run_stage(stage, work, progress=False).done == 1
    status = json.loads((work / "status" / "audio" / "config.json").read_text())
    assert status["batch_size"] == 1
    with pytest.raises(PrepError, match="batch_size"):
        run_stage(
            AudioStage(
                AudioConfig(backend="wav2vec2", wav2vec2=tiny_dir, device="cpu", batch_size=4)
            ),
            work,
            progress=False,
        )
    assert AudioStage(AudioConfig()).config.batch_size == 0  # logmel: no windows, unchanged
