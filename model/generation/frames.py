"""Stage-2 sampling: frames from a reference latent and per-frame motion (paper section 3.3,
inference; eq. 5 sampler, then D([x, J0])).

`iter_frames` is batched over frames: all frames of a chunk (default a 25-frame window)
are denoised together as one batch and handed on decoded, so memory does not grow with the
length. The UNet treats frames independently and every frame's start noise comes from its own
seeded draw, so with eta = 0 the chunk size changes only speed (bench/frames.py measures the
gain over a per-frame loop). The reference's φ2 keys/values are computed once. (A portrait becomes
the face crop the models were trained on in `reference.find_reference`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fd2talk.core.device import autocast, resolve_device
from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE
from fd2talk.model.data.normalize import Stats
from fd2talk.model.diffusion import Diffusion, DiffusionConfig
from fd2talk.model.generation.options import Noise
from fd2talk.model.solvers import Solver

CHUNK = 25  # frames denoised in one batch


@dataclass
class FrameModel:
    """The EMA UNet of a `fd2talk-train frames` checkpoint with its autoencoder."""

    unet: torch.nn.Module
    ae: torch.nn.Module
    stats: Stats
    diffusion: Diffusion
    device: str
    step: int
    latent_scale: float  # the UNet works on latents * latent_scale
    image_size: int = CROP_SIZE  # frame side the UNet was trained on (train_config.image_size)
    relative_pose: bool = False  # conditioned on pose minus the reference's (`condition`)


def from_parts(frames, autoencoder, device: str) -> FrameModel:
    """The FrameModel of a model folder's `frames` and `autoencoder` parts (`pretrained.ModelPart`,
    already checked to belong together)."""
    from fd2talk.model.nets.autoencoder import AutoencoderConfig, RefAutoencoder
    from fd2talk.model.nets.frame_unet import FrameUNet, FrameUNetConfig

    c = frames.config
    ae = RefAutoencoder.build(AutoencoderConfig.from_dict(autoencoder.config["config"]))
    ae.load_state_dict(autoencoder.weights)
    unet = FrameUNet(FrameUNetConfig(**c["unet_config"]), c["motion_dim"])
    unet.load_state_dict(frames.weights)
    return FrameModel(
        unet.eval().requires_grad_(False).to(device),
        ae.eval().requires_grad_(False).to(device),
        Stats.from_state_dict(c["stats"]),
        Diffusion(DiffusionConfig(**c["diffusion"])),
        device,
        int(c["step"]),
        float(c["latent_scale"]),
        int(c.get("train_config", {}).get("image_size", CROP_SIZE)),
        bool(c.get("relative_pose", False)),
    )


def load_frames(
    path: str | Path, device: str = "auto", autoencoder: str | None = None
) -> FrameModel:
    """Stage 2 from a model folder, a `fd2talk-train frames` run directory or checkpoint; the
    autoencoder from `autoencoder` (a folder) when given, else the one the model brings. The
    autoencoder must be the one the UNet was trained with (its fingerprint)."""
    from fd2talk.model.store import folder as pretrained

    parts = {p.name: p for p in pretrained.read_parts(path, with_autoencoder=not autoencoder)}
    if autoencoder:
        parts["autoencoder"] = pretrained.autoencoder_part(autoencoder)
    pretrained.check_compatible(parts)
    return from_parts(
        pretrained.require(parts, "frames", [path]),
        pretrained.require(parts, "autoencoder", [path]),
        resolve_device(device),
    )


def condition(stats: Stats, exp, pose, ref_pose=None) -> torch.Tensor:
    """The UNet's motion condition (N, D_exp + 6): normalised [beta, p]; with ref_pose (the
    reference frame's pose (.., 6)), p minus it in units of the training data's spread."""

    def t(a):
        return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a, np.float32))

    p = stats.normalize("pose", t(pose))
    if ref_pose is not None:
        p = p - stats.normalize("pose", t(ref_pose))
    return torch.cat([stats.normalize("exp", t(exp)), p], -1)


def start_noise(
    shape: tuple[int, ...], first: int, n: int, seed: int, noise: Noise, device: str
) -> torch.Tensor:
    """(n, *shape) start noise of frames first .. first + n - 1: frame i's own draw (a
    generator seeded by (seed, i), so the batch size never changes a frame) or, with
    noise="shared", one draw (seed) for every frame. Memory: one batch, whatever the length."""
    if noise not in set(Noise):
        raise UserError(f"noise must be one of {', '.join(sorted(Noise))}, not {noise!r}")
    frames = [0] * n if noise == Noise.shared else range(first, first + n)
    return torch.stack(
        [
            torch.randn(
                shape,
                generator=torch.Generator(device=device).manual_seed(seed * 1_000_003 + i),
                device=device,
            )
            for i in frames
        ]
    )


@torch.no_grad()
def iter_frames(
    model: FrameModel,
    ref: torch.Tensor,
    exp: np.ndarray,
    pose: np.ndarray,
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    chunk: int = CHUNK,
    ref_latent: bool = False,
    solver: Solver = Solver.ddim,
    noise: Noise = Noise.independent,
    cache: bool = True,
    dtype: str = "fp32",
    calibrate: bool = True,
    ref_pose: np.ndarray | None = None,
):
    """Yield frames (n, 3, H, W) in [-1, 1], `chunk` at a time, for raw motion exp (F, D_exp),
    pose (F, 6): the frames are denoised as one batch per chunk, decoded and handed on, so a
    caller that writes them out keeps one chunk in memory whatever the length.

    ref: the reference image (3, H, W) in [-1, 1] (or its latent (d, h, w) with
    ref_latent=True). chunk: frames per batch (1 = a per-frame loop). solver: "ddim" (eq. 5)
    or "dpm++". noise: "independent" start noise per frame or one "shared" by all frames.
    cache: compute the reference's φ2 keys/values once (else at every step, as training does).
    ref_pose: the reference's own pose (6,), needed by a model trained with relative pose.
    calibrate: correct the autoencoder's colour bias for this video (`colour_calibration`;
    needs the reference image, not its latent). With eta = 0 the frames do not depend on
    `chunk`."""
    if chunk < 1:
        raise UserError(f"the batch size must be at least 1, got {chunk}")
    image = ref.to(model.device)[None]
    with autocast(model.device, dtype):
        x = (image if ref_latent else model.ae.encode(image).float()) * model.latent_scale
        kv = model.unet.reference_cache(x) if cache else None  # x: (1, d, h, w)
    gain = offset = None
    if calibrate and not ref_latent:
        gain, offset = colour_calibration(model, image, x / model.latent_scale)
    if model.relative_pose and ref_pose is None:
        raise UserError(
            "this frame model was trained on pose relative to the reference's: "
            "pass the reference's own pose (ref_pose=...)"
        )
    motion = condition(model.stats, exp, pose, ref_pose if model.relative_pose else None).to(
        model.device
    )  # (F, D_exp + 6)
    gen = torch.Generator(device=model.device).manual_seed(seed)  # eta > 0: the steps' noise
    s = model.latent_scale
    for a in range(0, len(motion), chunk):
        cond = motion[a : a + chunk]  # (n, D)
        x_T = start_noise(tuple(x.shape[1:]), a, len(cond), seed, noise, model.device)
        with autocast(model.device, dtype):
            j0 = model.diffusion.sample(
                lambda j_t, t, c=cond: model.unet(j_t, t, c, x, cache=kv),
                tuple(x_T.shape),
                steps=steps,
                eta=eta,
                generator=gen,
                device=model.device,
                x_T=x_T,
                solver=solver,
            )  # (n, d, h, w)
            out = model.ae.decode((x / s).expand(len(cond), -1, -1, -1), j0 / s).float()
        if gain is not None:  # D([x, J0]) (n, 3, H, W), the reference's colours restored
            out = out * gain + offset
        yield out.clamp(-1, 1)  # (n, 3, H, W)


def colour_calibration(
    model: FrameModel, image: torch.Tensor, latent: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel gain and offset ((1, 3, 1, 1) each) that map the autoencoder's rendering
    of the reference, D([x, x]), onto the reference image itself (each channel's mean and
    spread over its pixels matched). An autoencoder trained on few videos shifts an unseen
    video's colours (the demo's held-out clips: 10-17 levels); the shift is the video's, the
    same in every frame, and the reference shows it, so applying this map to every decoded
    frame removes it (the reference only: no ground truth is used). Measured on the demo in ARCHITECTURE.md."""
    with torch.no_grad():
        rt = model.ae.decode(latent, latent).float().clamp(-1, 1)  # (1, 3, H, W)
    a, b = rt[0].flatten(1), image[0].float().flatten(1)  # (3, H*W)
    am, bm = a.mean(1, keepdim=True), b.mean(1, keepdim=True)
    # the spreads' ratio, not the least-squares slope: where the rendering's details differ
    # from the reference's (a decoder trained on few videos), the slope shrinks towards 0 and
    # flattens the contrast (regression dilution); the spreads do not
    spread_a = (a - am).pow(2).mean(1, keepdim=True).sqrt()
    spread_b = (b - bm).pow(2).mean(1, keepdim=True).sqrt()
    gain = (spread_b / spread_a.clamp_min(1e-3)).clamp(0.5, 2.0)
    offset = bm - gain * am
    return gain.view(1, 3, 1, 1), offset.view(1, 3, 1, 1)
