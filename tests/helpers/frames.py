"""How much the frame UNet's output depends on its conditions (tests and bench/learning_spread.py)."""

from __future__ import annotations

import numpy as np
import torch

from fd2talk.model.generation import frames as fr
from fd2talk.model.training.autoencoder import psnr

TARGETS = np.arange(5, 150, 18)  # 9 frames spread over each 6 s clip


def psnr_by_condition(model, clips) -> dict[str, np.ndarray]:
    """PSNR (dB) of sampled frames against the true frames per clip, per condition: the
    clip's own motion and first frame; its motion shuffled across frames; and the first frame
    of the next held-out clip of the *other* person as the reference."""
    scores = {"real": [], "shuffled_motion": [], "other_reference": []}
    perm = np.random.default_rng(0).permutation(len(TARGETS))
    for i, clip in enumerate(clips):
        person = clip["meta"]["speaker_id"]
        other = next(c for c in clips[i + 1 :] + clips[:i] if c["meta"]["speaker_id"] != person)
        gt = clip["img"][TARGETS]
        exp, pose = clip["exp"][TARGETS], clip["pose"][TARGETS]
        for name, ref, e, p in (
            ("real", clip["img"][0], exp, pose),
            ("shuffled_motion", clip["img"][0], exp[perm], pose[perm]),
            ("other_reference", other["img"][0], exp, pose),
        ):
            out = torch.cat(list(fr.iter_frames(model, ref, e, p, steps=20, seed=0)))
            scores[name].append(float(psnr(out, gt).mean()))
    return {k: np.array(v) for k, v in scores.items()}
