"""The latent scaling factor of the reference autoencoder (Stable Diffusion's `scaling_factor`,
LDM section 4.3.2): the frame UNet diffuses `latent * scaling_factor`, so that its latents have
unit variance whatever the autoencoder.

It is measured once, by `fd2talk-train autoencoder`, over frames of *many* clips of the train
split (`frames_per_clip` frames, evenly spaced, from each of up to `max_clips` clips), and
saved with the autoencoder (`autoencoder.json`), so the latent cache, the frame UNet's training
and decoding at generation time all use one number.
"""

from __future__ import annotations

import numpy as np
import torch

from fd2talk.model.data import loader as data_mod
from fd2talk.model.data.frame_items import AE_FIELDS, clip_frames, to_image

FRAMES_PER_CLIP = 4
MAX_CLIPS = 128


@torch.no_grad()
def measure(
    ae,
    shards: str,
    image_size: int,
    device: str,
    frames_per_clip: int = FRAMES_PER_CLIP,
    max_clips: int = MAX_CLIPS,
) -> float:
    """1 / std of the encoder's latents of frames of the train split's first `max_clips` clips
    (`frames_per_clip` evenly spaced frames each)."""
    zs = []
    for n, clip in enumerate(data_mod.iter_clips(shards, "train", AE_FIELDS)):
        if n == max_clips:
            break
        frames = clip_frames(clip, image_size)  # (F, S, S, 3) uint8
        pick = np.linspace(0, len(frames) - 1, frames_per_clip).round().astype(int)
        x = torch.from_numpy(to_image(frames[pick]))  # (k, 3, S, S) in [-1, 1]
        zs.append(ae.encode(x.to(device)).float().cpu())  # (k, d, h, w)
    return float(1.0 / torch.cat(zs).std().clamp_min(1e-6))
