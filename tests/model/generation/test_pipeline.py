"""Generation: portraits of any kind, audio of any format, the streamed mp4 with its audio,
the few-step solver, the reference cache, batch jobs, and (slow) the whole pipeline with the
demo-trained tiny models through the API and the CLI: pose modes, a video's pose, portraits
large, small and crowded."""

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO

from fd2talk.core import media
from fd2talk.core.errors import UserError
from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.model.generation.options import Options
from fd2talk.model.generation.outputs import PREVIEW_FRAMES
from fd2talk.model.generation.pipeline import FD2TalkPipeline
from fd2talk.model.generation.pose import video_pose

# `--pose from:VIDEO` against the pose fd2talk-prep stored for the same video (measured on
# four demo videos: rotation within 0.027 rad; translation r >= 0.98, offset by the framing)
ROTATION_ERR = 0.06  # rad, largest |difference| per frame
TRANSLATION_R = 0.95  # correlation over frames, per axis


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    data = np.clip(samples, -1, 1)
    if channels > 1:
        data = np.repeat(data[:, None], channels, 1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((data * 32767).astype("<i2").tobytes())
    return path


def speech(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    from fd2talk.model.demo.speech import synthetic_speech

    return synthetic_speech(int(seconds * rate), rate, np.random.default_rng(0)).astype(np.float32)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def portrait() -> np.ndarray:
    from fd2talk.model.demo.portraits import HOPPER

    return HOPPER.image()


# ---- inputs ---------------------------------------------------------------------------------


def test_images_of_every_kind_become_upright_rgb8(tmp_path):
    from PIL import Image

    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:10] = (255, 0, 0)  # a red band on top
    grey = media.to_rgb8(rgb[..., 0])
    assert grey.shape == (40, 60, 3) and (grey[0] == 255).all()
    rgba = np.concatenate([rgb, np.zeros((40, 60, 1), np.uint8)], 2)  # fully transparent
    assert (media.to_rgb8(rgba) == 255).all()  # over white
    sixteen = rgb.astype(np.uint16) * 257
    assert np.array_equal(media.to_rgb8(sixteen), rgb)
    assert np.array_equal(media.to_rgb8(rgb.astype(np.float32) / 255), rgb)
    with pytest.raises(UserError, match="expected an .H, W. grey"):
        media.to_rgb8(np.zeros((4, 4, 2), np.uint8))

    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert media.read_image(tmp_path / "grey.png").shape == (40, 60, 3)
    assert (media.read_image(tmp_path / "rgba.png") == 255).all()
    assert media.read_image(tmp_path / "sixteen.png")[0, 0, 0] == 255
    # EXIF orientation 6 (rotate 90 clockwise to view): the stored image is read upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    up = media.read_image(tmp_path / "rotated.jpg")
    assert up.shape == (60, 40, 3) and up[:, -5:, 0].mean() > 200  # the band is now on the right
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read the portrait .* JPEG or PNG"):
        media.read_image(tmp_path / "bad.jpg")
    with pytest.raises(UserError, match="not found"):
        media.read_image(tmp_path / "missing.png")


def test_audio_of_any_format_is_16k_mono_and_bad_audio_is_a_clear_error(tmp_path):
    wav = write_wav(tmp_path / "s44.wav", speech(2.0, 44100), 44100, channels=2)
    ffmpeg("-i", str(wav), "-c:a", "libmp3lame", str(tmp_path / "s.mp3"))
    ffmpeg("-i", str(wav), "-c:a", "aac", str(tmp_path / "s.m4a"))
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:rate=25:duration=2",
        "-i",
        str(wav),
        "-shortest",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        str(tmp_path / "v.mp4"),
    )
    for name in ("s44.wav", "s.mp3", "s.m4a", "v.mp4"):
        x = media.read_speech(tmp_path / name)
        assert x.dtype == np.float32 and abs(len(x) / SAMPLE_RATE - 2.0) < 0.08, name
        assert media.frame_count(x) in (49, 50, 51, 52)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        media.read_speech(tmp_path / "empty.wav")
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:rate=25:duration=1",
        "-c:v",
        "libx264",
        str(tmp_path / "silent.mp4"),
    )
    with pytest.raises(UserError, match="has no audio stream"):
        media.read_speech(tmp_path / "silent.mp4")
    (tmp_path / "junk.mp3").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserError, match="cannot read .* as audio"):
        media.read_speech(tmp_path / "junk.mp3")
    write_wav(tmp_path / "tiny.wav", np.zeros(100, np.float32))
    with pytest.raises(UserError, match="less than one 40 ms frame"):
        media.read_speech(tmp_path / "tiny.wav")
    # the frame count keeps the last partial frame once it is half a frame
    assert media.frame_count(np.zeros(640 * 10 + 320)) == 11
    assert media.frame_count(np.zeros(640 * 10 + 319)) == 10


def test_video_writer_streams_h264_with_the_audio_and_leaves_nothing_on_failure(tmp_path):
    audio = write_wav(tmp_path / "a.wav", speech(1.5))
    out = tmp_path / "out" / "v.mp4"
    rng = np.random.default_rng(0)
    with media.VideoWriter(out, 64, 64, audio, size=(128, 128)) as w:
        for _ in range(3):
            w.write(rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8))
        w.close()
    info = ffprobe(out)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (v["codec_name"], v["pix_fmt"], v["width"], v["r_frame_rate"]) == (
        "h264",
        "yuv420p",
        128,
        "25/1",
    )
    assert int(v["nb_frames"]) == 36 and a["codec_name"] == "aac"
    assert not list(out.parent.glob(".*partial*"))
    bad = tmp_path / "bad.mp4"
    with pytest.raises(RuntimeError), media.VideoWriter(bad, 64, 64, audio) as w:
        w.write(np.zeros((2, 64, 64, 3), np.uint8))
        raise RuntimeError("killed mid-way")
    assert not bad.exists() and not list(tmp_path.glob(".*partial*"))
    with pytest.raises(UserError, match=".mp4"):
        media.VideoWriter(tmp_path / "v.gif", 64, 64, audio)


# ---- sampling parts -------------------------------------------------------------------------


def test_dpm_solver_matches_many_step_ddim_in_few_steps():
    """Data N(mu, s^2) per dim: the exact x0 predictor is known, so a solver's error is its
    own. 15 DPM-Solver++ steps land closer to the 500-step DDIM result than 15 DDIM steps."""
    from fd2talk.model.diffusion import Diffusion, DiffusionConfig

    d = Diffusion(DiffusionConfig())
    ab = d.alphas_bar.float()
    mu, s = torch.linspace(-1, 1, 16), torch.linspace(0.2, 1.0, 16)

    def predict(x, t):  # E[x0 | x_t] for Gaussian data
        a = ab[t].view(-1, 1)
        var = a * s**2 + (1 - a)
        return mu + a.sqrt() * s**2 / var * (x - a.sqrt() * mu)

    x_T = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    ref = d.sample(predict, (64, 16), steps=500, x_T=x_T)
    err = {
        k: (d.sample(predict, (64, 16), steps=15, x_T=x_T, solver=k) - ref).abs().mean()
        for k in ("ddim", "dpm++")
    }
    assert err["dpm++"] < 0.5 * err["ddim"], err
    with pytest.raises(ValueError, match="solver must be one of"):
        d.sample(predict, (2, 16), solver="euler")


def test_reference_cache_gives_the_same_frames_and_computes_keys_once():
    from fd2talk.model.nets.frame_unet import PRESETS, FrameUNet

    torch.manual_seed(0)
    net = FrameUNet(PRESETS["tiny"], 10).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    d = PRESETS["tiny"].latent_channels
    j, ref = torch.randn(3, d, 16, 16), torch.randn(1, d, 16, 16)
    t, m = torch.tensor([5, 500, 900]), torch.randn(3, 10)
    calls = []
    blocks = [b for b in net.modules() if hasattr(b, "phi2")]
    for b in blocks:
        b.phi2.to_k.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        plain = net(j, t, m, ref)
        n_plain = len(calls)
        cache = net.reference_cache(ref)
        n_cache = len(calls) - n_plain
        cached = [net(j, t, m, ref, cache=cache) for _ in range(3)]
    assert n_plain == len(blocks) and n_cache == len(blocks)
    assert len(calls) == n_plain + n_cache  # the three cached calls computed no keys
    torch.testing.assert_close(cached[0], plain, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="another reference"):
        net(j, t, m, ref.clone(), cache=cache)


def test_jobs_csv_needs_its_columns(tmp_path):
    from fd2talk.model.generation.jobs import read_jobs

    (tmp_path / "j.csv").write_text("image,audio\na.jpg,b.wav\n")
    with pytest.raises(UserError, match="lacks out"):
        read_jobs(tmp_path / "j.csv")
    (tmp_path / "k.csv").write_text("image,audio,out\na.jpg,b.wav,o/v.mp4\n\n")
    rows = read_jobs(tmp_path / "k.csv")
    assert len(rows) == 1 and rows[0]["out"] == str(tmp_path / "o" / "v.mp4")


def test_generate_cli_help_and_a_missing_model(tmp_path):
    cmd = [sys.executable, "-c", "from fd2talk.cli.generate import main; main()"]
    help_ = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0
    for option in (
        "--pose",
        "--solver",
        "--jobs",
        "--paste-back",
        "--save-coeffs",
        "--preview",
        "--dtype",
        "--expression-scale",
        "--face-index",
    ):
        assert option in help_.stdout
    r = subprocess.run(
        cmd
        + [
            "--image",
            "a.jpg",
            "--audio",
            "b.wav",
            "--out",
            str(tmp_path / "v.mp4"),
            "--model",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "model" in r.stderr and "not found" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "v.mp4").exists()


# ---- the whole pipeline with the demo-trained tiny models (slow: they train first) -----------


@pytest.fixture(scope="module")
def pipe(motion_run, frames_run, face_model):
    return FD2TalkPipeline.from_pretrained(
        motion_run, frames_run, device="cpu", face_model=str(face_model)
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A real portrait (Grace Hopper, matplotlib's sample photo) and 3.3 s of speech as a
    44.1 kHz stereo m4a."""
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    Image.fromarray(portrait()).save(d / "portrait.jpg", quality=95)
    wav = write_wav(d / "speech.wav", speech(3.3, 44100), 44100, channels=2)
    ffmpeg("-i", str(wav), "-c:a", "aac", str(d / "speech.m4a"))
    return d / "portrait.jpg", d / "speech.m4a"


def test_pipeline_video_lasts_as_long_as_the_audio_and_a_seed_fixes_it(pipe, inputs, tmp_path):
    image, audio = inputs
    opts = Options(steps=4, batch_size=25)
    r = pipe(image, audio, out=tmp_path / "v.mp4", options=opts, keep_frames=True)
    info = ffprobe(r.out)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (v["codec_name"], v["pix_fmt"], v["r_frame_rate"], v["width"]) == (
        "h264",
        "yuv420p",
        "25/1",
        256,
    )
    assert a["codec_name"] == "aac"
    seconds = len(media.read_speech(audio)) / SAMPLE_RATE
    assert abs(int(v["nb_frames"]) / FPS - seconds) <= 1 / FPS and r.frames == int(v["nb_frames"])
    assert r.video.shape == (r.frames, pipe.image_size, pipe.image_size, 3)
    assert set(r.timings) == {"reference", "motion", "frames", "encode"}
    assert r.motion["exp"].shape[0] == r.motion["pose"].shape[0] == r.frames
    assert len(r.preview_frames) == PREVIEW_FRAMES and "s of compute per s" in r.summary()
    calls = []
    again = pipe(
        image,
        audio,
        options=Options(steps=4, batch_size=7),
        keep_frames=True,
        callback=lambda *c: calls.append(c),
    )
    assert np.abs(again.video.astype(int) - r.video).max() <= 1  # batch size: speed only
    # the stage callback (the web page's progress): every stage, frames per batch up to all
    assert [c[0] for c in calls[:3]] == ["reference", "motion", "motion"]
    frames = [c[1:] for c in calls if c[0] == "frames"]
    assert frames[0] == (7, r.frames) and frames[-1] == (r.frames, r.frames)
    assert len(frames) == -(-r.frames // 7) and "encode" not in [c[0] for c in calls]
    other = pipe(image, audio, options=Options(steps=4, seed=1), keep_frames=True)
    assert np.abs(other.video.astype(int) - r.video).mean() > 0.5  # the seed matters
    fast = pipe(
        image,
        audio,
        options=Options(steps=4, solver="dpm++", noise="independent"),
        keep_frames=True,
    )
    assert fast.video.shape == r.video.shape


def test_pose_modes_and_scales(pipe, inputs, tmp_path):
    image, audio = inputs
    still = pipe(image, audio, options=Options(steps=2, pose="still"))
    assert np.allclose(still.motion["pose"], still.motion["pose"][0])
    assert np.allclose(still.motion["pose"][0], still.reference.pose, atol=1e-5)
    assert still.reference.exp.shape == (pipe.motion_model.info.exp_dim,)
    track = np.cumsum(np.full((30, 6), 0.01, np.float32), 0)
    np.savez(tmp_path / "pose.npz", pose=track)
    driven = pipe(image, audio, options=Options(steps=2, pose=f"from:{tmp_path / 'pose.npz'}"))
    assert np.allclose(driven.motion["pose"][:30], track, atol=1e-6)  # then played back
    assert np.allclose(driven.motion["pose"][30], track[28]) and driven.notes
    calm = pipe(image, audio, options=Options(steps=2, pose_scale=0, expression_scale=0))
    assert np.allclose(calm.motion["pose"], calm.motion["pose"][0], atol=1e-5)
    assert np.allclose(calm.motion["exp"], 0)
    np.savez(tmp_path / "bad.npz", exp=track)
    with pytest.raises(UserError, match="has no `pose` array"):
        pipe(image, audio, options=Options(steps=2, pose=f"from:{tmp_path / 'bad.npz'}"))


def test_pose_from_a_video_is_what_prep_reads_from_its_face(pipe, demo_work, tmp_path, monkeypatch):
    """`--pose from:VIDEO` frames the video's face with the crop stage's box rule and reads
    the pose with the model's coefficient backend: on a demo source video, the pose that
    `fd2talk-prep` stored for its clip. The translation follows it with an offset: the crop
    here is the union of every frame's box, prep's of every fifth frame's (2 % narrower on
    demo004)."""
    import dataclasses

    from fd2talk.core import media
    from fd2talk.model.data import loader as data

    src = demo_work / "demo_src" / "demo004.mp4"
    stored = next(
        c["pose"]
        for split in ("train", "val", "test")
        for c in data.iter_clips(demo_work / "shards", split, ("pose",))
        if c["key"] == "demo004_f000_t0"
    )
    backend = pipe.motion_model.info.coeffs
    pose = video_pose(src, backend, pipe.face_model)
    assert pose.shape == stored.shape
    assert np.abs(pose[:, :3] - stored[:, :3]).max() < ROTATION_ERR
    r = [np.corrcoef(pose[:, i], stored[:, i])[0, 1] for i in range(3, 6)]
    assert min(r) > TRANSLATION_R, r
    # the stream probe chose is the one read: here probe is told the video is stream 2, after
    # a black video of the same size and its audio (ffmpeg's muxers put cover art last, so
    # a file with cover art before its video comes only from other tools)
    black = tmp_path / "black.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=size=512x512:duration=1", "-pix_fmt", "yuv420p", str(black))
    three = tmp_path / "three.mp4"
    ffmpeg(
        "-i",
        str(black),
        "-i",
        str(src),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "1:v",
        "-c",
        "copy",
        str(three),
    )
    probe = media.probe
    monkeypatch.setattr(
        media, "probe", lambda path, **kw: dataclasses.replace(probe(path, **kw), video_index=2)
    )
    np.testing.assert_array_equal(video_pose(three, backend, pipe.face_model), pose)
    monkeypatch.undo()
    with pytest.raises(UserError, match="no face found in the video"):
        video_pose(three, backend, pipe.face_model)  # probe's own choice: the first video, black


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from fd2talk.cli.generate import main; main()"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600, cwd=REPO)


def test_cli_writes_video_preview_and_coefficients_and_refuses_bad_inputs(
    motion_run, frames_run, inputs, face_model, tmp_path
):
    from PIL import Image

    image, audio = inputs
    model = [
        "--model",
        str(motion_run),
        "--model",
        str(frames_run),
        "--face-model",
        str(face_model),
        "--steps",
        "2",
        "-q",
    ]
    out = tmp_path / "v.mp4"
    r = run_cli(
        "--image",
        str(image),
        "--audio",
        str(audio),
        "--out",
        str(out),
        "--paste-back",
        "--pose",
        "still",
        "--preview",
        str(tmp_path / "p.png"),
        "--save-coeffs",
        str(tmp_path / "c.npz"),
        *model,
    )
    assert r.returncode == 0, r.stderr
    v = next(s for s in ffprobe(out)["streams"] if s["codec_type"] == "video")
    assert (v["width"], v["height"]) == portrait().shape[1::-1]  # the whole portrait
    with np.load(tmp_path / "c.npz") as z:
        assert z["pose"].shape == (int(v["nb_frames"]), 6) and str(z["backend"]) == "mediapipe"
    with Image.open(tmp_path / "p.png") as im:
        assert im.width > 800 and im.height > 300
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    bad = [
        (["--image", str(tmp_path / "blank.png"), "--audio", str(audio)], "no face found"),
        (["--image", str(image), "--audio", str(tmp_path / "blank.png")], "has no audio stream"),
        (["--image", str(image), "--audio", str(audio), "--face-index", "3"], "--face-index 3"),
    ]
    for args, message in bad:
        r = run_cli(*args, "--out", str(tmp_path / "x.mp4"), *model)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob(".*partial*"))
    r = run_cli(
        "--image",
        str(image),
        "--audio",
        str(audio),
        "--out",
        str(tmp_path / "x.mp4"),
        "--model",
        str(motion_run),
    )
    assert r.returncode == 2 and "no frames part" in r.stderr


def test_jobs_go_on_past_a_failure_and_skip_what_exists(pipe, inputs, tmp_path):
    from fd2talk.model.generation.jobs import run_jobs

    image, audio = inputs
    (tmp_path / "done.mp4").write_bytes(b"made earlier")
    (tmp_path / "jobs.csv").write_text(
        "image,audio,out\n"
        f"{image},{audio},a.mp4\n"
        f"{image},missing.wav,b.mp4\n"
        f"{image},{audio},done.mp4\n"
    )
    failed = run_jobs(pipe, tmp_path / "jobs.csv", Options(steps=2), progress=False)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "jobs.results.csv")))
    assert failed == 1 and [r["status"] for r in rows] == ["ok", "failed", "skipped"]
    assert "not found" in rows[1]["reason"] and (tmp_path / "a.mp4").stat().st_size > 1000
    assert not (tmp_path / "b.mp4").exists()


def test_relative_pose_is_the_pose_minus_the_references_in_data_units():
    from fd2talk.model.data.normalize import Stats
    from fd2talk.model.generation.frames import condition

    stats = Stats(
        {"exp": np.array([1.0, 2.0], np.float32), "pose": np.zeros(6, np.float32)},
        {"exp": np.array([2.0, 4.0], np.float32), "pose": np.ones(6, np.float32)},
        1,
    )
    exp, pose = np.array([[3.0, 6.0]], np.float32), np.ones((1, 6), np.float32)
    absolute = condition(stats, exp, pose)
    assert absolute[0, :2].tolist() == [1.0, 1.0] and absolute[0, 2:].tolist() == [1.0] * 6
    rel = condition(stats, exp, pose, np.full(6, 0.5, np.float32))
    assert rel[0].tolist() == [1.0, 1.0] + [0.5] * 6  # (p - ref) / std: the means cancel


def test_half_precision_needs_what_it_needs():
    from fd2talk.core.device import autocast

    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        autocast("cpu", "fp16")
    with pytest.raises(UserError, match="fp32, bf16 or fp16"):
        autocast("cpu", "int8")
    with autocast("cpu", "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16


def test_portraits_large_small_and_crowded(pipe):
    import cv2

    face = portrait()  # (H, W, 3)
    big = cv2.resize(face, (3840, round(3840 * face.shape[0] / face.shape[1])))
    ref = pipe.reference(big)
    assert ref.crop.shape == (256, 256, 3) and ref.box[2] - ref.box[0] > 1000  # a 4K portrait
    tiny = np.full((600, 800, 3), 200, np.uint8)
    tiny[:60, :60] = cv2.resize(face, (60, 60))
    with pytest.raises(UserError, match="smaller than the 64 px|no face found"):
        pipe.reference(tiny)
    h, w = face.shape[:2]
    small = cv2.resize(face, (int(w * 0.7), int(h * 0.7)))
    group = np.full((h, w + small.shape[1], 3), 255, np.uint8)
    group[:, :w], group[: small.shape[0], w:] = face, small  # a smaller second face, right
    notes = []
    pipe.reference(group, notes=notes)
    assert notes and "faces in the portrait" in notes[0] and "--face-index" in notes[0]
    second = pipe.reference(group, face_index=1)
    assert second.faces == 2 and second.box[0] >= w - 100  # the right-hand, smaller face


def test_bf16_frames_on_the_cpu(pipe, inputs):
    image, audio = inputs
    half = FD2TalkPipeline(pipe.motion_model, pipe.frame_model, pipe.face_model, dtype="bf16")
    r = half(image, audio, options=Options(steps=2), keep_frames=True)
    full = pipe(image, audio, options=Options(steps=2), keep_frames=True)
    assert r.video.shape == full.video.shape
    assert np.abs(r.video.astype(int) - full.video).mean() < 25  # close, not equal
