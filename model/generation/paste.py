"""Paste-back (`--paste-back`): the generated face crops blended back into the whole portrait,
so the video shows the portrait's own framing (not in the paper, whose videos are the crops).

Each generated frame (the model's image size) is resized to the crop's square in the portrait
and blended in with a feathered mask (1 inside, falling to 0 over the outer 12 % of the
square, smoothstep), onto the portrait scaled down to at most 1920 px on its long side.
"""

from __future__ import annotations

import numpy as np

from fd2talk.model.generation.options import Reference

MAX_PASTE_SIDE = 1920  # paste-back output: the portrait scaled down to this long side at most


class Paste:
    """Generated face crops blended back into the whole portrait with a feathered mask."""

    def __init__(self, ref: Reference, feather: float = 0.12):
        import cv2

        h, w = ref.image.shape[:2]
        k = min(1.0, MAX_PASTE_SIDE / max(h, w))
        self.width, self.height = max(2, round(w * k / 2) * 2), max(2, round(h * k / 2) * 2)
        self.kx, self.ky = self.width / w, self.height / h
        self.base = cv2.resize(ref.image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        x0, y0, x1, y1 = ref.box
        self.x0, self.y0 = round(x0 * self.kx), round(y0 * self.ky)
        self.x1 = min(self.width, round(x1 * self.kx))
        self.y1 = min(self.height, round(y1 * self.ky))
        bw, bh = self.x1 - self.x0, self.y1 - self.y0
        # a mask 1 inside, falling to 0 over the outer `feather` of the crop (smoothstep)
        u = np.minimum(np.arange(bw) + 0.5, bw - np.arange(bw) - 0.5) / (feather * bw)
        v = np.minimum(np.arange(bh) + 0.5, bh - np.arange(bh) - 0.5) / (feather * bh)
        ramp = lambda a: np.clip(a, 0, 1) ** 2 * (3 - 2 * np.clip(a, 0, 1))  # noqa: E731
        self.mask = (ramp(v)[:, None] * ramp(u)[None, :])[..., None].astype(np.float32)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 crops -> (n, H, W, 3) uint8 portraits."""
        import cv2

        bw, bh = self.x1 - self.x0, self.y1 - self.y0
        out = np.repeat(self.base[None], len(faces), 0)
        for i, face in enumerate(faces):
            big = cv2.resize(face, (bw, bh), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            region = out[i, self.y0 : self.y1, self.x0 : self.x1].astype(np.float32)
            out[i, self.y0 : self.y1, self.x0 : self.x1] = (
                np.round(region + self.mask * (big - region)).clip(0, 255).astype(np.uint8)
            )
        return out
