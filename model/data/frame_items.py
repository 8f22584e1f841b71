"""Stage-2 training items cut from shard clips (paper section 3.4.2; DESIGN.md section 3).

Two item makers for `data.train_batches(make_items=...)`, both picklable:

- `AutoencoderPairs`: two random valid frames F1, F2 of one clip -> {"ref": F1, "frame": F2}
  (images (3, S, S) float32 in [-1, 1]; S = 256, the crop size, or smaller for CPU smoke
  runs), the autoencoder's fine-tuning pairs.
- `FrameItems`: the UNet's tuple without t: the clip's first valid frame as the reference x, a
  random valid target frame J0, and that frame's ground-truth [beta, p] plus its index (the
  trainer swaps in stage-1 predictions by (key, index) when asked). With the latent cache
  (`latent.npy` in the shards) ref/frame are latents (d, 64, 64); without it, images that the
  trainer encodes, optionally colour-jittered alike (`jitter`).
"""

from __future__ import annotations

import os
import random
import zlib
from collections import OrderedDict

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE, MEDIA_KEY
from fd2talk.model.configs import RefFrame
from fd2talk.model.data.loader import decode_frames

AE_FIELDS = ("valid", MEDIA_KEY)
DECODED_MB = 2048  # decoded frames kept per process (MB; $FD2TALK_DECODED_MB): ~1.5 GB
# holds the whole corpus at 128 px, so a resampled stream over 150 clips decodes each once
FRAME_FIELDS = ("exp", "pose", "valid")


def to_image(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    return np.moveaxis(frames, -1, -3).astype(np.float32) / 127.5 - 1.0


class _DecodedClips:
    """Decoded clips of this process, the least recently used dropped once they hold more
    than `budget` bytes: a stream that revisits its clips decodes each once (ffmpeg would
    otherwise cost more than the training step)."""

    def __init__(self, megabytes: int | None = None):
        if megabytes is None:
            megabytes = int(os.environ.get("FD2TALK_DECODED_MB", DECODED_MB))
        self.budget, self.clips, self.bytes = megabytes * 2**20, OrderedDict(), 0  # bytes

    def get(self, clip: dict, size: int) -> np.ndarray:
        key = (clip["key"], zlib.crc32(clip[MEDIA_KEY]), size)
        if key in self.clips:
            self.clips.move_to_end(key)
            return self.clips[key]
        frames = decode_frames(clip[MEDIA_KEY], size)  # (F, size, size, 3)
        self.clips[key] = frames
        self.bytes += frames.nbytes
        while self.bytes > self.budget and len(self.clips) > 1:
            self.bytes -= self.clips.popitem(last=False)[1].nbytes
        return frames


_DECODED = _DecodedClips()


def clip_frames(clip: dict, size: int) -> np.ndarray:
    frames = _DECODED.get(clip, size)  # (F, size, size, 3)
    if len(frames) != len(clip["valid"]):
        raise UserError(
            f"sample {clip['key']}: its mp4 has {len(frames)} frames but valid.npy "
            f"{len(clip['valid'])}: re-run `fd2talk-prep shard`"
        )
    return frames


def jitter(images: list[np.ndarray], rng: random.Random, amount: float) -> list[np.ndarray]:
    """One random colour transform applied alike to all `images` ((3, H, W) in [-1, 1]): a
    random channel order, per-channel gain 1 ± amount and offset ± amount (amount 0: none).

    Training augmentation for small datasets: with few videos, each video's colours can be
    learned by heart from the motion (which tells the videos and people apart), and the
    UNet then ignores the reference. Jittered alike, the target's colours are only to be had
    from the reference (measured on the demo: DESIGN departures in ARCHITECTURE.md)."""
    if amount <= 0:
        return images
    gain = np.array([1 + rng.uniform(-amount, amount) for _ in range(3)], np.float32)
    offset = np.array([rng.uniform(-amount, amount) for _ in range(3)], np.float32)
    order = rng.sample(range(3), 3)
    return [
        np.clip(im[order] * gain[:, None, None] + offset[:, None, None], -1, 1) for im in images
    ]


def recolour(images: list[np.ndarray], rng: random.Random, amount: float) -> list[np.ndarray]:
    """One random colour look applied alike to all `images` ((3, H, W) in [-1, 1]): per-channel
    gain 1 ± amount and a gamma 1 ± amount on [0, 1] intensities (a white balance and a
    tone curve, as cameras and grading differ; no channel swap). amount 0: none.

    The autoencoder's augmentation: trained from scratch on a few videos it otherwise learns
    their few colour looks by heart and casts a held-out video's colours towards them
    (measured on the demo: ARCHITECTURE.md, stage 2)."""
    if amount <= 0:
        return images
    gain = np.array([1 + rng.uniform(-amount, amount) for _ in range(3)], np.float32)
    gamma = 1 + rng.uniform(-amount, amount)
    return [
        np.clip((((im + 1) / 2) ** gamma) * gain[:, None, None] * 2 - 1, -1, 1).astype(np.float32)
        for im in images
    ]


class AutoencoderPairs:
    def __init__(self, pairs_per_clip: int = 4, image_size: int = CROP_SIZE, jitter: float = 0.0):
        self.n, self.size, self.jitter = pairs_per_clip, image_size, jitter

    def __call__(self, clip: dict, rng: random.Random) -> list[dict]:
        idx = np.flatnonzero(clip["valid"])
        if len(idx) < 2:
            return []
        frames = clip_frames(clip, self.size)
        out = []
        for _ in range(self.n):
            a, b = rng.sample(list(idx), 2)
            ref, frame = recolour([to_image(frames[a]), to_image(frames[b])], rng, self.jitter)
            out.append({"ref": ref, "frame": frame, "key": clip["key"], "index": int(b)})
        return out


class FrameItems:
    def __init__(
        self,
        items_per_clip: int = 8,
        latents: bool = False,
        image_size: int = CROP_SIZE,
        jitter: float = 0.0,
        ref_frame: str = RefFrame.first.value,
    ):
        if latents and jitter > 0:
            raise ValueError("colour jitter works on images: it cannot use the latent cache")
        if ref_frame not in set(RefFrame):
            raise ValueError(f"ref_frame must be one of {', '.join(RefFrame)}, not {ref_frame!r}")
        self.n, self.latents, self.size, self.jitter = items_per_clip, latents, image_size, jitter
        self.ref_frame = ref_frame

    def fields(self) -> tuple[str, ...]:
        return FRAME_FIELDS + (("latent",) if self.latents else (MEDIA_KEY,))

    def __call__(self, clip: dict, rng: random.Random) -> list[dict]:
        idx = np.flatnonzero(clip["valid"])
        if len(idx) < 2:
            return []
        ref = int(idx[0])  # the clip's first (valid) frame is the reference (paper 3.4.2)
        # (F, C, H, W) latents, or (F, S, S, 3) uint8 frames made images item by item
        source = clip["latent"] if self.latents else clip_frames(clip, self.size)

        def take(k: int) -> np.ndarray:
            return source[k] if self.latents else to_image(source[k])

        out = []
        for _ in range(self.n):
            if self.ref_frame == RefFrame.random:  # any valid frame: many more (ref, target) pairs
                ref = int(idx[rng.randrange(len(idx))])
            i = int(idx[rng.randrange(len(idx))])
            x, j0 = jitter([take(ref), take(i)], rng, self.jitter)
            out.append(
                {
                    "ref": x,
                    "frame": j0,
                    "exp": clip["exp"][i],
                    "pose": clip["pose"][i],
                    "ref_exp": clip["exp"][ref],
                    "ref_pose": clip["pose"][ref],
                    "key": clip["key"],
                    "index": i,
                    "speech": clip["meta"].get("audio") is not False,
                }
            )
        return out
