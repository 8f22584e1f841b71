"""Helpers the tests share (import them with `from helpers import ...`; the fixtures live in
conftest.py): paths, small media made with ffmpeg's own sources, stand-in weight files built
with the published network classes, a start-then-kill runner, shard rewriting."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


SHARED_MEDIA = Path(os.environ.get("FD2TALK_SHARED_MEDIA", REPO.parent / "shared" / "media"))


SHARED_CLIPS = ("hdtf_aoc_512.mp4", "talk_tys_512.mp4", "talk_10_512.mp4")


def ffmpeg_video(
    path: Path,
    seconds: float = 2.0,
    fps: float = 25,
    size: str = "320x240",
    audio: bool = True,
    sample_rate: int = 16000,
    channels: int = 1,
    vcodec: str = "libx264",
    source: str = "testsrc2",
) -> Path:
    """Write a synthetic video (ffmpeg lavfi source + a sine tone) and return its path."""
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"{source}=size={size}:rate={fps}:duration={seconds}",
    ]
    if audio:
        layout = "mono" if channels == 1 else "stereo"
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=220:sample_rate={sample_rate}:duration={seconds}",
            "-af",
            f"aformat=channel_layouts={layout}",
            "-c:a",
            "aac",
        ]
    cmd += ["-c:v", vcodec, "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


def frames_to_video(
    path: Path,
    frames: np.ndarray,
    fps: float = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Encode (F, H, W, 3) uint8 RGB frames (and optional mono float32 audio) to `path`."""
    tmp_wav = None
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{frames.shape[2]}x{frames.shape[1]}",
        "-r",
        str(fps),
        "-i",
        "-",
    ]
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


def s3fd_standin(
    path: Path,
    level: int = 5,
    logit: float = 10.0,
    loc: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> Path:
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


STAGE2_IMAGE = 64  # stage-2 smoke runs: 64 px frames -> 16x16 latents (f = 4), fast on CPU
