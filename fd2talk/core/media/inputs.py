"""Generation's inputs: portraits of any kind and speech in any format ffmpeg reads.

Every problem with a user's file is a `UserError` that names the file and says what to do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.media.read import read_audio
from fd2talk.core.media.tools import tool
from fd2talk.core.schema import SAMPLE_RATE, SAMPLES_PER_FRAME
from fd2talk.core.skip import PrepError, Skip

AUDIO_TIMEOUT = 600.0  # seconds for decoding one audio file


# ---- portraits ------------------------------------------------------------------------------


def to_rgb8(image: np.ndarray, what: str = "the portrait") -> np.ndarray:
    """Any (H, W), (H, W, 1|3|4) uint8/uint16/float array -> (H, W, 3) uint8 RGB: grey is
    repeated, alpha composited over white, 16-bit scaled to 8, floats read as [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise UserError(
            f"{what} has shape {a.shape}: expected an (H, W) grey or (H, W, 3|4) colour image"
        )
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        f = np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0)
    elif np.issubdtype(a.dtype, np.integer):  # e.g. 32-bit PIL "I" images of 16-bit data
        f = np.clip(a.astype(np.float64) / max(float(a.max()), 65535.0), 0, 1).astype(np.float32)
    else:
        raise UserError(f"{what} has pixel type {a.dtype}: use an 8- or 16-bit image")
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=2)
    elif f.shape[2] == 4:
        alpha = f[..., 3:]
        f = f[..., :3] * alpha + (1.0 - alpha)  # transparent parts become white
    return np.ascontiguousarray(np.round(f * 255.0).astype(np.uint8))


def read_image(path: str | Path) -> np.ndarray:
    """A portrait file as (H, W, 3) uint8 RGB, upright (its EXIF orientation applied), from
    any mode Pillow reads: grey, palette, RGBA (over white), 16-bit, CMYK."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"portrait {path} not found")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                a = np.asarray(im, dtype=np.uint16)
            elif im.mode in ("I", "F"):
                a = np.asarray(im)
                a = a.astype(np.uint16) if a.max() <= 65535 and a.min() >= 0 else a
            elif im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                a = np.asarray(im.convert("RGBA"))
            elif im.mode == "L":
                a = np.asarray(im)
            else:
                a = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(
            f"cannot read the portrait {path} as an image ({e}): use a JPEG or PNG"
        ) from None
    if a.size == 0:
        raise UserError(f"the portrait {path} is empty (0 pixels)")
    return to_rgb8(a, f"the portrait {path}")


# ---- audio ----------------------------------------------------------------------------------


def _ffmpeg(name: str) -> str:
    try:
        return tool(name)
    except PrepError as e:
        raise UserError(str(e)) from None


def audio_streams(path: Path) -> int:
    """The number of audio streams in `path` (an error if ffprobe cannot read it)."""
    cmd = [
        _ffmpeg("ffprobe"),
        "-v",
        "error",
        "-select_streams",
        "a",
        "-show_entries",
        "stream=index",
        "-of",
        "csv=p=0",
        str(path),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"ffprobe ran past 60 s on {path}: is it a media file?") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(
            f"cannot read {path} as audio ({err[-1] if err else 'ffprobe failed'}):"
            " use a wav, mp3, m4a, flac or a video file with sound"
        )
    return len([line for line in proc.stdout.decode().splitlines() if line.strip()])


def read_speech(path: str | Path, limit: float | None = None) -> np.ndarray:
    """The first audio stream of any file ffmpeg reads (wav, mp3, m4a, any rate, stereo, a
    video's track) as float32 mono samples at 16 kHz; at least one 40 ms frame long. With
    `limit`, only its first `limit` seconds are decoded."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio {path} not found")
    if path.stat().st_size == 0:
        raise UserError(f"the audio file {path} is empty (0 bytes)")
    if audio_streams(path) == 0:
        raise UserError(f"{path} has no audio stream: give a file with speech in it")
    try:
        samples = read_audio(path, timeout=AUDIO_TIMEOUT, sample_rate=SAMPLE_RATE, limit=limit)
    except Skip as e:
        last = (e.stderr or "").strip().splitlines()
        raise UserError(
            f"cannot decode the audio of {path}: {e.detail}{' (' + last[-1] + ')' if last else ''}"
        ) from None
    if len(samples) < SAMPLES_PER_FRAME // 2:
        raise UserError(
            f"{path} holds no audio (or less than one 40 ms frame): give a longer speech file"
        )
    if not np.isfinite(samples).all():
        raise UserError(f"the audio of {path} decodes to non-finite samples: re-encode it")
    return samples


def frame_count(samples: np.ndarray) -> int:
    """Video frames for 16 kHz `samples`: the audio's length at 25 fps, rounded, so the last
    partial 40 ms frame is kept when it is at least half a frame."""
    return max(1, int(len(samples) / SAMPLES_PER_FRAME + 0.5))  # halves up
