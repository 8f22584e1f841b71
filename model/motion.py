"""Stage-1 sampling: motion (expression + pose) for any number of frames from a checkpoint and
audio (paper section 3.2, inference; eq. 5 sampler with 50 steps).

The networks see windows of `WINDOW` = 25 frames. Longer audio is covered by windows that
overlap by `overlap` frames (the last one is moved back to end at the last frame). Windows are
stitched in two ways at once, so there is no jump at a boundary:

1. Inpainting: when window w is sampled, the first half of the frames it shares with what is
   already generated are *known* (`Diffusion.sample(known=...)`: at every step the network's
   x0 estimate is replaced by the known frames there and x_t by their forward-noised version),
   so the new frames are denoised jointly with, and conditioned through self-attention on, the
   frames they continue.
2. Crossfade: over the second half of the shared frames the output moves linearly from the
   previous window's frames to the new window's, so what inpainting alone leaves at the edge
   of the known frames (a small step) is spread over several frames.

tests/test_motion.py measures the frame-to-frame change at the seams of a trained model:
about 1.25x the median change inside windows, against 2.5x for independent windows.
Audio shorter than a window is padded by repeating its edge frames and the result cut back.

`sample(...)` returns denormalised coefficients: exp (F, D_exp), pose (F, 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import WINDOW, DatasetInfo
from .device import resolve_device
from .diffusion import Diffusion, DiffusionConfig
from .errors import UserError
from .motion_dit import MotionDiT, MotionDiTConfig
from .normalize import Stats
from .schema import SAMPLE_RATE, SAMPLES_PER_FRAME
from .trainer import load_checkpoint

OVERLAP = 8  # frames shared by consecutive windows


@dataclass
class MotionModel:
    """The EMA Exp and Pose Transformers of a `fd2talk-train motion` checkpoint."""

    nets: dict[str, MotionDiT]  # "exp", "pose"
    stats: Stats
    diffusion: Diffusion
    info: DatasetInfo
    audio_config: dict
    device: str
    step: int


def load_motion(path: str | Path, device: str = "auto") -> MotionModel:
    device = resolve_device(device)
    state = load_checkpoint(Path(path), "motion checkpoint")
    if state.get("kind") != "motion":
        raise UserError(f"{path} is a {state.get('kind', 'unknown')!r} checkpoint, not a motion "
                        "checkpoint (`fd2talk-train motion` writes those)")
    config = MotionDiTConfig(**state["model_config"])
    dims = state["dims"]
    nets = {}
    for name in ("exp", "pose"):
        net = MotionDiT(config, dims[name], dims["audio"])
        net.load_state_dict(state["ema"][name])
        nets[name] = net.eval().requires_grad_(False).to(device)
    return MotionModel(nets, Stats.from_state_dict(state["stats"]),
                       Diffusion(DiffusionConfig(**state["diffusion"])),
                       DatasetInfo(**state["dataset"]), state.get("audio_config", {}), device,
                       int(state["step"]))


def audio_features(model: MotionModel, audio_path: str | Path,
                   wav2vec2: str | None = None) -> np.ndarray:
    """Features of an audio (or video) file computed as the training shards' were: (F, D_a),
    F = round(duration * 25)."""
    from fd2talk.pipeline import media
    from fd2talk.pipeline.audio_features import LogMel, Wav2Vec2Features, Wav2Vec2Options

    samples = media.read_audio(Path(audio_path), timeout=600.0, sample_rate=SAMPLE_RATE)
    frames = int(round(len(samples) / SAMPLES_PER_FRAME))
    if frames == 0:
        raise UserError(f"{audio_path} holds no audio (or less than one 40 ms frame)")
    if model.info.audio_features == "logmel":
        return LogMel().features(samples, frames)
    cfg = model.audio_config
    src = wav2vec2 or cfg.get("wav2vec2")
    if not src:
        raise UserError("this motion model was trained on wav2vec2 features: pass the same "
                        "wav2vec 2.0 model directory (wav2vec2=...)")
    opts = Wav2Vec2Options(layer=cfg.get("layer", -1),
                           chunk_seconds=cfg.get("chunk_seconds", 15.0),
                           context_seconds=cfg.get("context_seconds", 2.5), device=model.device)
    return Wav2Vec2Features(src, opts).features(samples, frames)


def window_starts(frames: int, window: int = WINDOW, overlap: int = OVERLAP) -> list[int]:
    """Window starts covering [0, frames): stride window - overlap, the last ending at frames."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    starts = [0]
    while starts[-1] + window < frames:
        starts.append(min(starts[-1] + window - overlap, frames - window))
    return starts


@torch.no_grad()
def sample(model: MotionModel, audio: np.ndarray | str | Path, steps: int = 50, eta: float = 0.0,
           seed: int = 0, overlap: int = OVERLAP, wav2vec2: str | None = None) -> dict:
    """exp (F, D_exp) and pose (F, 6) float32 for audio features (F, D_a) or an audio file."""
    feats = audio if isinstance(audio, np.ndarray) else audio_features(model, audio, wav2vec2)
    if feats.ndim != 2 or feats.shape[1] != model.info.audio_dim:
        raise UserError(f"audio features of shape {feats.shape} do not fit this model, which "
                        f"takes (F, {model.info.audio_dim}) {model.info.audio_features} features")
    frames = len(feats)
    padded = max(frames, WINDOW)
    feats = np.concatenate([feats, np.repeat(feats[-1:], padded - frames, 0)])  # (F', D_a)
    a = model.stats.normalize("audio", torch.from_numpy(feats.astype(np.float32)))
    a = a.to(model.device)[None]  # (1, F', D_a)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    out = {}
    for name, net in model.nets.items():
        x = torch.zeros(1, padded, net.motion_dim, device=model.device)  # (1, F', D)
        done = 0
        for s in window_starts(padded, WINDOW, overlap):
            shared = done - s  # frames of this window already generated
            known = None
            if shared > 0:
                hard = shared - min(shared, overlap) // 2  # kept exactly; the rest is blended
                mask = torch.zeros(1, WINDOW, 1, dtype=torch.bool, device=model.device)
                mask[:, :hard] = True
                values = torch.zeros(1, WINDOW, net.motion_dim, device=model.device)
                values[:, :shared] = x[:, s:done]
                known = (values, mask)
            new = model.diffusion.sample(
                lambda x_t, t, net=net, cond=a[:, s:s + WINDOW]: net(x_t, t, cond),
                (1, WINDOW, net.motion_dim), steps=steps, eta=eta, generator=gen,
                device=model.device, known=known)  # (1, W, D)
            if shared > 0:  # linear crossfade over the blended frames
                ramp = torch.linspace(0, 1, shared - hard + 2, device=model.device)[1:-1]
                new[:, hard:shared] = torch.lerp(values[:, hard:shared], new[:, hard:shared],
                                                 ramp[None, :, None])
            x[:, s:s + WINDOW] = new
            done = s + WINDOW
        out[name] = model.stats.denormalize(name, x[0, :frames]).cpu().numpy()
    return out
