"""What differs between the demo's videos (DESIGN.md section 6), all drawn from (seed, video):
the person (`portraits.face_of`), the mirroring, a colour look (per-channel gains and a
gamma), the framing, the head motion's amplitudes, frequencies and phases, the voice, and the
file format (videos 3, 8, ...: 30 fps and 44.1 kHz stereo; 4, 9, ...: 24 fps, so the data
pipeline's resampling is exercised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.model.demo.portraits import ASTRONAUT, Face, face_of
from fd2talk.model.demo.speech import SENTENCES, VOICES


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings (`fd2talk-prep demo`; `make_demo`)."""

    n_videos: int = 10  # distinct video ids, so a 70/10/20 split by video fills all splits
    seconds: float = 6.0  # per video
    size: int = 512  # frame side in pixels
    seed: int = 0
    use_espeak: bool = True  # espeak-ng when on PATH, else (or when False) the synthetic voice
    mixed_formats: bool = True  # videos 3, 8, ...: 30 fps + 44.1 kHz stereo; 4, 9, ...: 24 fps


@dataclass(frozen=True)
class Variant:
    """Everything that differs between demo videos, drawn from (seed, index)."""

    name: str
    face: Face
    fps: int
    sample_rate: int
    channels: int
    flip: bool
    gains: tuple[float, float, float]  # per-channel colour gains (the video's colour look)
    gamma: float
    crop_centre: tuple[float, float]  # portrait pixels, before any flip
    crop_side: float
    motion: tuple[float, ...]  # rot (deg), tx, ty (portrait px), scale, f1, f2 (Hz), phases x8
    voice: str
    speed: int  # espeak words per minute
    pitch: int  # espeak pitch 0..99
    first_sentence: int


def variant(cfg: DemoConfig, index: int) -> Variant:
    """Video `index`'s variant, drawn from (cfg.seed, index)."""
    rng = np.random.default_rng([cfg.seed, index])
    fps, sr, ch = FPS, SAMPLE_RATE, 1
    if cfg.mixed_formats and index % 5 == 3:
        fps, sr, ch = 30, 44100, 2
    elif cfg.mixed_formats and index % 5 == 4:
        fps = 24
    u = rng.uniform
    face = face_of(index)
    px = face.iod / ASTRONAUT.iod  # lengths below are in astronaut pixels
    motion = (
        u(1.5, 3.5),
        u(2, 5) * px,
        u(1.5, 4) * px,
        u(0.01, 0.03),
        u(0.12, 0.3),
        u(0.35, 0.6),
        *u(0, 2 * np.pi, 8),
    )
    return Variant(
        name=f"demo{index:03d}",
        face=face,
        fps=fps,
        sample_rate=sr,
        channels=ch,
        flip=bool(index % 2),
        gains=tuple(float(g) for g in u(0.88, 1.12, 3)),
        gamma=float(u(0.85, 1.15)),
        crop_centre=(face.nose[0] + u(-8, 8) * px, face.crop_y + u(-6, 6) * px),
        crop_side=face.crop_side * u(0.92, 1.12),
        motion=tuple(float(m) for m in motion),
        voice=VOICES[index % len(VOICES)],
        speed=int(rng.integers(140, 185)),
        pitch=int(rng.integers(35, 70)),
        first_sentence=int(rng.integers(len(SENTENCES))),
    )


def portrait(v: Variant) -> np.ndarray:
    """The video's person, mirrored and recoloured for this video: (H, W, 3) uint8."""
    img = v.face.image()
    if v.flip:
        img = np.ascontiguousarray(img[:, ::-1])
    lut = np.arange(256) / 255.0
    luts = [np.clip(255 * g * lut**v.gamma + 0.5, 0, 255).astype(np.uint8) for g in v.gains]
    return np.stack([luts[c][img[..., c]] for c in range(3)], axis=-1)
