"""Stage-2 sampling: frames from a reference latent and per-frame motion (paper section 3.3,
inference; eq. 5 sampler, then D([x, J0])).

`sample_frames` is batched over frames: all frames of a chunk (default a 25-frame window)
are denoised together as one batch — the UNet treats frames independently, so batching only
changes speed (bench/frames.py measures the gain over a per-frame loop). `reference_crop`
turns any portrait into the 256x256 face crop the models were trained on (the data
pipeline's detector and FOMM-style box); an image without a face is a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .device import resolve_device
from .diffusion import Diffusion, DiffusionConfig
from .errors import UserError
from .normalize import Stats
from .schema import CROP_SIZE
from .trainer import load_checkpoint

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


def load_frames(path: str | Path, device: str = "auto", autoencoder: str | None = None
                ) -> FrameModel:
    """Load a frames checkpoint; its autoencoder from `autoencoder` or the path it recorded
    (the fingerprint must match the one the UNet was trained with)."""
    from .frame_unet import FrameUNet, FrameUNetConfig
    from .train_frames import load_autoencoder

    device = resolve_device(device)
    state = load_checkpoint(Path(path), "frames checkpoint")
    if state.get("kind") != "frames":
        raise UserError(f"{path} is a {state.get('kind', 'unknown')!r} checkpoint, not a frames "
                        "checkpoint (`fd2talk-train frames` writes those)")
    ae = load_autoencoder(autoencoder or state["autoencoder_path"], device)
    if ae.fingerprint() != state["autoencoder"]:
        raise UserError(f"the autoencoder {autoencoder or state['autoencoder_path']} is not the "
                        f"one {path} was trained with: pass that one (autoencoder=...)")
    unet = FrameUNet(FrameUNetConfig(**state["unet_config"]), state["motion_dim"])
    unet.load_state_dict(state["ema"])
    return FrameModel(unet.eval().requires_grad_(False).to(device), ae,
                      Stats.from_state_dict(state["stats"]),
                      Diffusion(DiffusionConfig(**state["diffusion"])), device,
                      int(state["step"]), float(state["latent_scale"]))


@torch.no_grad()
def sample_frames(model: FrameModel, ref: torch.Tensor, exp: np.ndarray, pose: np.ndarray,
                  steps: int = 50, eta: float = 0.0, seed: int = 0, chunk: int = CHUNK,
                  ref_latent: bool = False) -> torch.Tensor:
    """Frames (F, 3, H, W) in [-1, 1] for raw motion exp (F, D_exp), pose (F, 6).

    ref: the reference image (3, H, W) in [-1, 1] (or its latent (d, h, w) with
    ref_latent=True). chunk: frames per batch (1 = a per-frame loop)."""
    x = ref.to(model.device)[None]
    x = (x if ref_latent else model.ae.encode(x)) * model.latent_scale  # (1, d, h, w)
    motion = torch.cat([model.stats.normalize("exp", torch.from_numpy(np.asarray(exp, np.float32))),
                        model.stats.normalize("pose", torch.from_numpy(np.asarray(pose, np.float32)))],
                       -1).to(model.device)  # (F, D_exp + 6)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    frames = []
    for a in range(0, len(motion), chunk):
        cond = motion[a:a + chunk]  # (n, D)
        xs = x.expand(len(cond), -1, -1, -1)  # (n, d, h, w)
        j0 = model.diffusion.sample(lambda j_t, t, c=cond, r=xs: model.unet(j_t, t, c, r),
                                    tuple(xs.shape), steps=steps, eta=eta, generator=gen,
                                    device=model.device)  # (n, d, h, w)
        s = model.latent_scale
        frames.append(model.ae.decode(xs / s, j0 / s).clamp(-1, 1))  # D([x, J0]) (n, 3, H, W)
    return torch.cat(frames)


def reference_crop(image: np.ndarray, face_model: str | None = None,
                   size: int = CROP_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB portrait -> (size, size, 3) uint8 face crop, as `fd2talk-prep crop`
    frames it (BlazeFace box, enlarged, squared, shifted into the image)."""
    import cv2

    from fd2talk.pipeline.detect import MediaPipeDetector
    from fd2talk.pipeline.tubes import crop_box

    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"the reference must be an RGB image (H, W, 3), got shape {image.shape}")
    with MediaPipeDetector(face_model) as detector:
        faces = detector.detect(image)
    if not faces:
        raise UserError("no face found in the reference image: use a portrait with one clearly "
                        "visible, roughly frontal face")
    box = max(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))[:4]  # the largest face
    x0, y0, x1, y1 = crop_box(box, image.shape[1], image.shape[0])
    return cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), (size, size),
                      interpolation=cv2.INTER_AREA)
