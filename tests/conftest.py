"""Shared fixtures: the shared real media (skipped with a reason when absent), the face
model, and small media files generated with ffmpeg's own sources."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub: tests are offline
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDIA = Path(os.environ.get("FD2TALK_SHARED_MEDIA", REPO.parent / "shared" / "media"))
SHARED_CLIPS = ("hdtf_aoc_512.mp4", "talk_tys_512.mp4", "talk_10_512.mp4")


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The team's real clips (../shared/media); absent in a user's fresh clone."""
    if not (SHARED_MEDIA / SHARED_CLIPS[0]).is_file():
        pytest.skip(f"shared media not found at {SHARED_MEDIA} (only the team's checkouts have it)")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def face_model() -> Path:
    """MediaPipe's face_landmarker.task; install.sh puts it in place (a missing one fails loudly)."""
    from fd2talk.pipeline.weights import face_model_path

    return face_model_path()


def ffmpeg_video(path: Path, seconds: float = 2.0, fps: float = 25, size: str = "320x240",
                 audio: bool = True, sample_rate: int = 16000, channels: int = 1,
                 vcodec: str = "libx264", source: str = "testsrc2") -> Path:
    """Write a synthetic video (ffmpeg lavfi source + a sine tone) and return its path."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
           f"{source}=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        layout = "mono" if channels == 1 else "stereo"
        cmd += ["-f", "lavfi", "-i",
                f"sine=frequency=220:sample_rate={sample_rate}:duration={seconds}",
                "-af", f"aformat=channel_layouts={layout}", "-c:a", "aac"]
    cmd += ["-c:v", vcodec, "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


def frames_to_video(path: Path, frames: np.ndarray, fps: float = 25,
                    audio: np.ndarray | None = None, sample_rate: int = 16000) -> Path:
    """Encode (F, H, W, 3) uint8 RGB frames (and optional mono float32 audio) to `path`."""
    tmp_wav = None
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
           f"{frames.shape[2]}x{frames.shape[1]}", "-r", str(fps), "-i", "-"]
    if audio is not None:
        import wave

        tmp_wav = path.with_suffix(".tmp.wav")
        with wave.open(str(tmp_wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        cmd += ["-i", str(tmp_wav), "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True, timeout=300)
    if tmp_wav:
        tmp_wav.unlink()
    return path


def s3fd_standin(path: Path, level: int = 5, logit: float = 10.0,
                 loc: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> Path:
    """Save a stand-in for face-alignment's s3fd-619a316812.pth (its own network class, so the
    published layout): every weight zero, so the output does not depend on the image; every
    anchor is background except those of detection level `level` (0-5: strides 4-128), whose
    face logit is `logit` and whose box offsets are `loc` (SSD coding: centre += 0.1 anchor
    d, size *= exp(0.2 d))."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    state = s3fd().state_dict()
    heads = ("conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2")
    for name, value in state.items():
        if not name.endswith("_norm.weight"):  # the L2Norm scales keep their values
            value.zero_()
    for k, head in enumerate(heads):
        conf = state[f"{head}_mbox_conf.bias"]  # level 0: 3 background labels + face
        conf[:-1] = 0.0 if k == level else 10.0
        conf[-1] = logit if k == level else 0.0
    state[f"{heads[level]}_mbox_loc.bias"][:] = torch.tensor(loc)
    torch.save(state, path)
    return path


def fan_standin(path: Path, seed: int = 0) -> Path:
    """Save a stand-in for face-alignment's 2DFAN4-11f355bf06.pth.tar: its own FAN-4 network
    with random weights (seeded), the state dict as published."""
    import torch
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    torch.save(FAN(4).state_dict(), path)
    return path


def start_then_kill(cmd: list[str], ready, delay: float = 0.0, timeout: float = 60.0) -> bool:
    """Start `cmd` (in REPO, its own process group), wait until `ready()` is true (or it
    exits, or `timeout`), then `delay` more seconds, then kill -9 the whole group.
    Returns whether it was killed (False: it had already finished)."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    t0 = time.monotonic()
    while proc.poll() is None and not ready() and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed


@pytest.fixture
def synth_video(tmp_path):
    """Factory: synth_video(name, **ffmpeg_video kwargs) -> path under tmp_path."""

    def make(name: str = "synth.mp4", **kw) -> Path:
        return ffmpeg_video(tmp_path / name, **kw)

    return make


@pytest.fixture
def one_thread():
    """Small models run faster on one thread, and OpenMP's 2-thread barriers make them ~50x
    slower whenever another process holds the second core (use with pytest.mark.usefixtures)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_work(tmp_path_factory) -> Path:
    """The bundled demo dataset through the whole pipeline, as `fd2talk-prep run WORK --demo`
    makes it (10 videos of 6 s: 7 train, 1 val, 2 test clips; ~1 minute): the model tests'
    training data."""
    import sys

    work = tmp_path_factory.mktemp("demo") / "work"
    subprocess.run([sys.executable, "-c", "from fd2talk.pipeline.cli import main; main()",
                    "run", str(work), "--demo", "-q"], check=True, timeout=900, cwd=REPO)
    return work


@pytest.fixture(scope="session")
def demo_model(demo_work, tmp_path_factory) -> Path:
    """`fd2talk-train demo` on the demo, as install.sh runs it (the demo recipe, ~10 minutes on
    2 cores): the model folder. The end-to-end test and the web app's browser test share it."""
    import sys

    root = tmp_path_factory.mktemp("demo_model")
    r = subprocess.run([sys.executable, "-c", "from fd2talk.model.cli import train_main; "
                        "train_main()", "demo", "--work", str(demo_work), "--runs",
                        str(root / "runs"), "--out", str(root / "model"), "-q"],
                       capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "model"


def rewrite_shards(src: Path, dst: Path, change) -> Path:
    """Copy a shard folder, passing every sample (dict: extension -> bytes) through `change`
    (which edits it in place; a key set to None is dropped). Returns `dst`."""
    import shutil

    import webdataset as wds

    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.suffix != ".tar":
            shutil.copy(path, dst / path.name)
            continue
        with wds.TarWriter(str(dst / path.name)) as out:
            for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
                sample = {k: v for k, v in sample.items() if k != "__url__"}
                change(sample)
                out.write({k: v for k, v in sample.items() if v is not None})
    return dst


def npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# The demo runs' settings: the fixtures below and bench/learning_spread.py (which measures the
# learning tests' figures over several seeds) train with these.
LIPSYNC_SETTINGS = dict(steps=600, batch_size=16, val_every=300, log_every=50, device="cpu")
MOTION_STEPS = 600  # the demo motion run: a few minutes of CPU at most
MOTION_SETTINGS = dict(steps=MOTION_STEPS, batch_size=16, lr=1e-3, lambda_sync=0.1,
                       val_every=200, log_every=50, epoch_batches=100, device="cpu")
STAGE2_IMAGE = 64  # stage-2 smoke runs: 64 px frames -> 16x16 latents (f = 4), fast on CPU
AE_STEPS = 300
FRAMES_STEPS = 600
AE_SETTINGS = dict(steps=AE_STEPS, batch_size=8, lr=1e-3, lambda_per=0, image_size=STAGE2_IMAGE,
                   val_every=100, log_every=20, epoch_batches=100, device="cpu")
FRAMES_SETTINGS = dict(steps=FRAMES_STEPS, batch_size=16, lr=1e-3, image_size=STAGE2_IMAGE,
                       jitter=0.2, val_every=200, log_every=20, epoch_batches=100, device="cpu")


@pytest.fixture(scope="session")
def lip_expert(demo_work, tmp_path_factory):
    """A tiny lip expert trained on the demo's train split: (checkpoint path, val metrics)."""
    from fd2talk.model.train_lipsync import LipsyncTrainConfig, train_lipsync

    out = tmp_path_factory.mktemp("lipsync") / "run"
    cfg = LipsyncTrainConfig(shards=str(demo_work / "shards"), out=str(out), **LIPSYNC_SETTINGS)
    metrics = train_lipsync(cfg, progress=False)
    return out / "checkpoint.pt", metrics


@pytest.fixture(scope="session")
def motion_run(demo_work, lip_expert, tmp_path_factory) -> Path:
    """Exp + Pose Transformers (tiny) trained on the demo with L_sync: the run directory."""
    from fd2talk.model.train_motion import MotionTrainConfig, train_motion

    out = tmp_path_factory.mktemp("motion") / "run"
    cfg = MotionTrainConfig(shards=str(demo_work / "shards"), out=str(out),
                            lip_expert=str(lip_expert[0]), **MOTION_SETTINGS)
    train_motion(cfg, progress=False)
    return out


# Fixtures that build the demo dataset, prepare the shared clips or train models: a test
# that uses one (directly or through another fixture) is `slow`.
HEAVY_FIXTURES = {"demo_work", "real_work", "lip_expert", "motion_run", "ae_run", "frames_run",
                  "demo_model"}


def pytest_collection_modifyitems(config, items):
    """Tests that use a heavy fixture are marked `slow` (`pytest -m "not slow"` skips them);
    `gpu`-marked tests need CUDA: skipped, with that reason, on machines without it."""
    import torch

    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ae_run(demo_work, tmp_path_factory) -> Path:
    """The tiny reference autoencoder fine-tuned on the demo (no LPIPS): the run directory."""
    from fd2talk.model.train_autoencoder import AutoencoderTrainConfig, train_autoencoder

    out = tmp_path_factory.mktemp("autoencoder") / "run"
    train_autoencoder(AutoencoderTrainConfig(shards=str(demo_work / "shards"), out=str(out),
                                             **AE_SETTINGS), progress=False)
    return out


@pytest.fixture(scope="session")
def frames_run(demo_work, ae_run, tmp_path_factory) -> Path:
    """The tiny frame UNet trained on the demo with ground-truth motion and colour jitter (a
    small dataset: `--jitter`): the run directory."""
    from fd2talk.model.train_frames import FramesTrainConfig, train_frames

    out = tmp_path_factory.mktemp("frames") / "run"
    train_frames(FramesTrainConfig(shards=str(demo_work / "shards"), out=str(out),
                                   autoencoder=str(ae_run / "autoencoder"), **FRAMES_SETTINGS),
                 progress=False)
    return out


@pytest.fixture(scope="session")
def real_work(shared_media, tmp_path_factory) -> Path:
    """The three shared real clips through the pipeline: the first 70 % of each for train, the
    rest for val (three speakers, so both splits hold every identity; ~20 s)."""
    import json
    import sys

    root = tmp_path_factory.mktemp("real")
    rows = []
    for name in SHARED_CLIPS:
        src = shared_media / name
        seconds = float(json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
             str(src)], capture_output=True, text=True, check=True).stdout)["format"]["duration"])
        cut, stem = round(0.7 * seconds, 2), src.stem
        # two spans of one file, as two videos on purpose: each speaker in both splits
        rows += [{"key": f"{stem}_a", "path": str(src), "end": cut, "split": "train",
                  "video_id": f"{stem}_a"},
                 {"key": f"{stem}_b", "path": str(src), "start": cut, "split": "val",
                  "video_id": f"{stem}_b"}]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = root / "work"
    subprocess.run([sys.executable, "-c", "from fd2talk.pipeline.cli import main; main()",
                    "run", str(work), "-m", str(manifest), "-q"], check=True, timeout=900,
                   cwd=REPO)
    return work
