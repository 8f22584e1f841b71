"""Shared fixtures: the shared real media (skipped with a reason when absent), the face
model, small media files, and the demo data and tiny models trained once per session (the
helpers they use are in helpers.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, SHARED_CLIPS, SHARED_MEDIA, STAGE2_IMAGE, ffmpeg_video, frames_to_video  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub: tests are offline
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The team's real clips (../shared/media); absent in a user's fresh clone."""
    if not (SHARED_MEDIA / SHARED_CLIPS[0]).is_file():
        pytest.skip(f"shared media not found at {SHARED_MEDIA} (only the team's checkouts have it)")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def face_model() -> Path:
    """MediaPipe's face_landmarker.task; install.sh puts it in place (a missing one fails loudly)."""
    from fd2talk.pipeline.backends.weights import face_model_path

    return face_model_path()


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
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.prep import main; main()",
            "run",
            str(work),
            "--demo",
            "-q",
        ],
        check=True,
        timeout=900,
        cwd=REPO,
    )
    return work


@pytest.fixture(scope="session")
def demo_model(demo_work, tmp_path_factory) -> Path:
    """`fd2talk-train demo` on the demo, as install.sh runs it (the demo recipe, ~10 minutes on
    2 cores): the model folder. The end-to-end test and the web app's browser test share it."""
    import sys

    root = tmp_path_factory.mktemp("demo_model")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.train import main; main()",
            "demo",
            "--work",
            str(demo_work),
            "--runs",
            str(root / "runs"),
            "--out",
            str(root / "model"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "model"


# The demo runs' settings: the fixtures below and bench/learning_spread.py (which measures the
# learning tests' figures over several seeds) train with these.
LIPSYNC_SETTINGS = dict(steps=600, batch_size=16, val_every=300, log_every=50, device="cpu")
MOTION_STEPS = 600  # the demo motion run: a few minutes of CPU at most
MOTION_SETTINGS = dict(
    steps=MOTION_STEPS,
    batch_size=16,
    lr=1e-3,
    lambda_sync=0.1,
    val_every=200,
    log_every=50,
    epoch_batches=100,
    device="cpu",
)
AE_STEPS = 300
FRAMES_STEPS = 600
AE_SETTINGS = dict(
    steps=AE_STEPS,
    batch_size=8,
    lr=1e-3,
    lambda_per=0,
    image_size=STAGE2_IMAGE,
    val_every=100,
    log_every=20,
    epoch_batches=100,
    device="cpu",
)
FRAMES_SETTINGS = dict(
    steps=FRAMES_STEPS,
    batch_size=16,
    lr=1e-3,
    image_size=STAGE2_IMAGE,
    jitter=0.2,
    val_every=200,
    log_every=20,
    epoch_batches=100,
    device="cpu",
)


@pytest.fixture(scope="session")
def lip_expert(demo_work, tmp_path_factory):
    """A tiny lip expert trained on the demo's train split: (checkpoint path, val metrics)."""
    from fd2talk.model.training.lipsync import LipsyncTrainConfig, train_lipsync

    out = tmp_path_factory.mktemp("lipsync") / "run"
    cfg = LipsyncTrainConfig(shards=str(demo_work / "shards"), out=str(out), **LIPSYNC_SETTINGS)
    metrics = train_lipsync(cfg, progress=False)
    return out / "checkpoint.pt", metrics


@pytest.fixture(scope="session")
def motion_run(demo_work, lip_expert, tmp_path_factory) -> Path:
    """Exp + Pose Transformers (tiny) trained on the demo with L_sync: the run directory."""
    from fd2talk.model.training.motion import MotionTrainConfig, train_motion

    out = tmp_path_factory.mktemp("motion") / "run"
    cfg = MotionTrainConfig(
        shards=str(demo_work / "shards"),
        out=str(out),
        lip_expert=str(lip_expert[0]),
        **MOTION_SETTINGS,
    )
    train_motion(cfg, progress=False)
    return out


# Fixtures that build the demo dataset, prepare the shared clips or train models: a test
# that uses one (directly or through another fixture) is `slow`.
HEAVY_FIXTURES = {
    "demo_work",
    "real_work",
    "lip_expert",
    "motion_run",
    "ae_run",
    "frames_run",
    "demo_model",
}


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
    from fd2talk.model.training.autoencoder import AutoencoderTrainConfig, train_autoencoder

    out = tmp_path_factory.mktemp("autoencoder") / "run"
    train_autoencoder(
        AutoencoderTrainConfig(shards=str(demo_work / "shards"), out=str(out), **AE_SETTINGS),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def frames_run(demo_work, ae_run, tmp_path_factory) -> Path:
    """The tiny frame UNet trained on the demo with ground-truth motion and colour jitter (a
    small dataset: `--jitter`): the run directory."""
    from fd2talk.model.training.frames import FramesTrainConfig, train_frames

    out = tmp_path_factory.mktemp("frames") / "run"
    train_frames(
        FramesTrainConfig(
            shards=str(demo_work / "shards"),
            out=str(out),
            autoencoder=str(ae_run / "autoencoder"),
            **FRAMES_SETTINGS,
        ),
        progress=False,
    )
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
        seconds = float(
            json.loads(
                subprocess.run(
                    [
                        "ffprobe",
                        "-v",
                        "error",
                        "-show_entries",
                        "format=duration",
                        "-of",
                        "json",
                        str(src),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )["format"]["duration"]
        )
        cut, stem = round(0.7 * seconds, 2), src.stem
        # two spans of one file, as two videos on purpose: each speaker in both splits
        rows += [
            {
                "key": f"{stem}_a",
                "path": str(src),
                "end": cut,
                "split": "train",
                "video_id": f"{stem}_a",
            },
            {
                "key": f"{stem}_b",
                "path": str(src),
                "start": cut,
                "split": "val",
                "video_id": f"{stem}_b",
            },
        ]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = root / "work"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.prep import main; main()",
            "run",
            str(work),
            "-m",
            str(manifest),
            "-q",
        ],
        check=True,
        timeout=900,
        cwd=REPO,
    )
    return work
