"""Stage-1 sampling: motion (expression + pose) for any number of frames from a checkpoint and
audio (paper section 3.2, inference; eq. 5 sampler with 50 steps).

The networks see windows of `WINDOW` = 25 frames. Longer audio is covered by windows that
overlap by `overlap` frames (the last one is moved back to end at the last frame), and all
windows are denoised *jointly* (MultiDiffusion, Bar-Tal et al. 2023): the sampler's state is
the whole sequence, and at every step each window's x0 estimate is computed (the windows in
one batch) and the estimates are averaged frame by frame, weighted by a tent that fades each
window out towards its edges, before eq. 5 takes the step. There is one trajectory for the
whole audio, so there is no seam to hide. `stitch="inpaint"` keeps the older sequential way
(inpaint the overlap, crossfade) for comparison; bench/motion_seams.py measures both
(ARCHITECTURE.md gives the figures). Audio shorter than a window is padded by repeating its
edge frames and the result cut back.

`sample(...)` returns denormalised coefficients: exp (F, D_exp), pose (F, 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch

from fd2talk.core.device import resolve_device
from fd2talk.core.errors import UserError
from fd2talk.core.schema import SAMPLE_RATE, SAMPLES_PER_FRAME
from fd2talk.model.data.loader import WINDOW, DatasetInfo
from fd2talk.model.data.normalize import Stats
from fd2talk.model.diffusion import Diffusion, DiffusionConfig
from fd2talk.model.nets.motion_dit import MotionDiT, MotionDiTConfig
from fd2talk.model.solvers import Solver

OVERLAP = 8  # frames shared by consecutive windows


@dataclass
class MotionModel:
    """The EMA Exp and Pose Transformers of a `fd2talk-train motion` checkpoint."""

    nets: dict[str, MotionDiT]  # "exp", "pose" (or "joint": the single-DiT ablation)
    stats: Stats
    diffusion: Diffusion
    info: DatasetInfo
    audio_config: dict
    device: str
    step: int


def from_part(part, device: str) -> MotionModel:
    """The MotionModel of a model folder's `motion` part (`pretrained.ModelPart`)."""
    c = part.config
    config = MotionDiTConfig(**c["model_config"])
    nets = {}
    single = bool(c.get("single_dit", False))  # the ablation: one joint transformer
    dims = {"joint": c["dims"]["exp"] + c["dims"]["pose"]} if single else c["dims"]
    for name in ("joint",) if single else ("exp", "pose"):
        net = MotionDiT(config, dims[name], c["dims"]["audio"])
        net.load_state_dict(part.sub(name))
        nets[name] = net.eval().requires_grad_(False).to(device)
    return MotionModel(
        nets,
        Stats.from_state_dict(c["stats"]),
        Diffusion(DiffusionConfig(**c["diffusion"])),
        DatasetInfo(**c["dataset"]),
        c.get("audio_config", {}),
        device,
        int(c["step"]),
    )


def load_motion(path: str | Path, device: str = "auto") -> MotionModel:
    """Stage 1 from a model folder, a `fd2talk-train motion` run directory or checkpoint."""
    from fd2talk.model.store import folder as pretrained

    parts = pretrained.load_parts([path])
    return from_part(pretrained.require(parts, "motion", [path]), resolve_device(device))


def audio_features(
    model: MotionModel, audio_path: str | Path, wav2vec2: str | None = None
) -> np.ndarray:
    """Features of an audio (or video) file computed as the training shards' were: (F, D_a),
    F = round(duration * 25)."""
    from fd2talk.core import media

    samples = media.read_audio(Path(audio_path), timeout=600.0, sample_rate=SAMPLE_RATE)
    frames = int(round(len(samples) / SAMPLES_PER_FRAME))
    if frames == 0:
        raise UserError(f"{audio_path} holds no audio (or less than one 40 ms frame)")
    return speech_features(model, samples, frames, wav2vec2)


def speech_features(
    model: MotionModel, samples: np.ndarray, frames: int, wav2vec2: str | None = None
) -> np.ndarray:
    """(frames, D_a) features of 16 kHz mono samples with the backend the model was trained
    on (logmel, or the wav2vec 2.0 model of its record / `wav2vec2`, whose width must fit)."""
    from fd2talk.pipeline.backends.audio_features import LogMel, Wav2Vec2Features, Wav2Vec2Options

    if model.info.audio_features == "logmel":
        return LogMel().features(samples, frames)
    cfg = model.audio_config
    src = wav2vec2 or cfg.get("wav2vec2")
    if not src:
        raise UserError(
            "this motion model was trained on wav2vec2 features: pass the same "
            "wav2vec 2.0 model directory (--wav2vec2)"
        )
    if not Path(src).is_dir():
        raise UserError(
            f"the wav2vec 2.0 model {src} (the motion model's audio backend) is not "
            "a folder here: pass its local copy with --wav2vec2 (a Hugging Face "
            "folder with config.json and weights)"
        )
    opts = Wav2Vec2Options(
        layer=cfg.get("layer", -1),
        chunk_seconds=cfg.get("chunk_seconds", 15.0),
        context_seconds=cfg.get("context_seconds", 2.5),
        device=model.device,
    )
    feats = Wav2Vec2Features(src, opts).features(samples, frames)
    if feats.shape[1] != model.info.audio_dim:
        raise UserError(
            f"the motion model was trained on {model.info.audio_dim}-dim wav2vec2 "
            f"features ({cfg.get('wav2vec2')}) but {src} gives {feats.shape[1]}: "
            "use the wav2vec 2.0 model it was trained with"
        )
    return feats


def window_starts(frames: int, window: int = WINDOW, overlap: int = OVERLAP) -> list[int]:
    """Window starts covering [0, frames): stride window - overlap, the last ending at frames."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    starts = [0]
    while starts[-1] + window < frames:
        starts.append(min(starts[-1] + window - overlap, frames - window))
    return starts


class Stitch(StrEnum):
    """How windows of a long audio are put together: `joint` (the default), or `inpaint`, the
    sequential way it replaced, kept so that bench/motion_seams.py measures both
    (ARCHITECTURE.md gives the figures)."""

    joint = "joint"  # every window denoised at once, x0 averaged per frame
    inpaint = "inpaint"  # window by window, inpainting + crossfade over the overlap


@torch.no_grad()
def sample(
    model: MotionModel,
    audio: np.ndarray | str | Path,
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    overlap: int = OVERLAP,
    wav2vec2: str | None = None,
    stitch: Stitch = Stitch.joint,
    solver: Solver = Solver.ddim,
) -> dict:
    """exp (F, D_exp) and pose (F, 6) float32 for audio features (F, D_a) or an audio file."""
    feats = audio if isinstance(audio, np.ndarray) else audio_features(model, audio, wav2vec2)
    if feats.ndim != 2 or feats.shape[1] != model.info.audio_dim:
        raise UserError(
            f"audio features of shape {feats.shape} do not fit this model, which "
            f"takes (F, {model.info.audio_dim}) {model.info.audio_features} features"
        )
    if stitch == Stitch.inpaint and solver != Solver.ddim:
        raise UserError("stitch='inpaint' works with the ddim solver only")
    if stitch not in set(Stitch):
        raise UserError(f"stitch must be one of {', '.join(Stitch)}, not {stitch!r}")
    stitch = Stitch(stitch)
    frames = len(feats)
    padded = max(frames, WINDOW)
    feats = np.concatenate([feats, np.repeat(feats[-1:], padded - frames, 0)])  # (F', D_a)
    a = model.stats.normalize("audio", torch.from_numpy(feats.astype(np.float32)))
    a = a.to(model.device)[None]  # (1, F', D_a)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    starts = window_starts(padded, WINDOW, overlap)
    out = {}
    for name, net in model.nets.items():
        if stitch is Stitch.joint:
            x = _sample_joint(model, net, a, starts, steps, eta, gen, solver)
        else:
            x = _sample_inpaint(model, net, a, starts, overlap, steps, eta, gen)
        x = x[0, :frames]
        split = (
            {"exp": x[:, : model.info.exp_dim], "pose": x[:, model.info.exp_dim :]}
            if name == "joint"
            else {name: x}
        )
        for k, v in split.items():
            out[k] = model.stats.denormalize(k, v).cpu().numpy()
    return out


WINDOW_BATCH = 64  # windows denoised per network call in joint sampling (bounds memory)


def window_weights(window: int = WINDOW, device: str | torch.device = "cpu") -> torch.Tensor:
    """(W,) blending weights of a window's frames: a tent 1, 2, ..., peak, ..., 2, 1, so a
    window's say over a frame fades out towards its edges and no frame's average changes
    abruptly where a window starts or ends."""
    i = torch.arange(window, device=device, dtype=torch.float32)
    return torch.minimum(i + 1, window - i)


def _sample_joint(
    model: MotionModel,
    net: MotionDiT,
    a: torch.Tensor,
    starts: list[int],
    steps: int,
    eta: float,
    gen: torch.Generator,
    solver: Solver = Solver.ddim,
) -> torch.Tensor:
    """(1, F', D) normalised motion: every window denoised at once (MultiDiffusion).

    The state is the whole sequence x_t (1, F', D). At each step the network predicts x0 for
    every window (all windows in batches of WINDOW_BATCH), the predictions are averaged frame
    by frame with `window_weights`, and eq. 5 steps the whole sequence with that one x0_hat.
    Overlapping windows therefore share one trajectory: there is nothing to stitch."""
    idx = torch.tensor(starts, device=model.device)[:, None] + torch.arange(
        WINDOW, device=model.device
    )  # (nW, W) frame index of each window position
    w = window_weights(WINDOW, model.device)  # (W,)
    cover = torch.zeros(a.shape[1], device=model.device).index_add_(
        0, idx.flatten(), w.repeat(len(starts))
    )  # (F',) total weight per frame
    cond = a[0][idx]  # (nW, W, D_a)

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        windows = x_t[0][idx]  # (nW, W, D)
        x0 = torch.cat(
            [
                net(xw, t[:1].expand(len(xw)), cw)
                for xw, cw in zip(
                    windows.split(WINDOW_BATCH), cond.split(WINDOW_BATCH), strict=True
                )
            ]
        )  # (nW, W, D)
        acc = torch.zeros_like(x_t[0]).index_add_(
            0, idx.flatten(), (x0 * w[None, :, None]).flatten(0, 1)
        )
        return (acc / cover[:, None])[None]  # (1, F', D)

    return model.diffusion.sample(
        predict,
        (1, a.shape[1], net.motion_dim),
        steps=steps,
        eta=eta,
        generator=gen,
        device=model.device,
        solver=solver,
    )


def _sample_inpaint(
    model: MotionModel,
    net: MotionDiT,
    a: torch.Tensor,
    starts: list[int],
    overlap: int,
    steps: int,
    eta: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """(1, F', D) normalised motion, window after window: the first half of the frames a
    window shares with what is already generated are inpainted (`known=`), the second half
    crossfaded linearly from the previous window's frames to the new ones."""
    x = torch.zeros(1, a.shape[1], net.motion_dim, device=model.device)  # (1, F', D)
    done = 0
    for s in starts:
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
            lambda x_t, t, cond=a[:, s : s + WINDOW]: net(x_t, t, cond),
            (1, WINDOW, net.motion_dim),
            steps=steps,
            eta=eta,
            generator=gen,
            device=model.device,
            known=known,
        )  # (1, W, D)
        if shared > 0:  # linear crossfade over the blended frames
            ramp = torch.linspace(0, 1, shared - hard + 2, device=model.device)[1:-1]
            new[:, hard:shared] = torch.lerp(
                values[:, hard:shared], new[:, hard:shared], ramp[None, :, None]
            )
        x[:, s : s + WINDOW] = new
        done = s + WINDOW
    return x


def boundary_steps(
    x: np.ndarray, starts: list[int], window: int = WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Frame-to-frame change |x[f] - x[f-1]| of motion x (F, D), split into the changes into
    the frames where a window starts or ends (where windows could leave a seam) and all
    others (inside windows): (boundary, inside)."""
    steps = np.linalg.norm(np.diff(x, axis=0), axis=1)  # (F - 1,): step into frame f = i + 1
    edges = {s for s in starts[1:]} | {s + window for s in starts[:-1]}
    at = np.zeros(len(steps), bool)
    at[[f - 1 for f in sorted(edges) if 0 < f < len(x)]] = True
    return steps[at], steps[~at]
