"""Speech-like signals and tiny wav2vec 2.0 models, for the audio tests."""

from __future__ import annotations

import numpy as np
import torch

from fd2talk.pipeline.backends.audio_features import (
    fit_length,
)

SR, SPF = 16000, 640


def tiny_config(**kw):
    from transformers import Wav2Vec2Config

    base = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    return Wav2Vec2Config(**{**base, **kw})


def save_model(path, **kw):
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(tiny_config(**kw)).eval().save_pretrained(path)
    return str(path)


def voiced(seconds, seed=0):
    """A speech-like signal: 120-180 Hz harmonics, syllable-rate amplitude bursts, pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 3.3 * t + rng.uniform(0, 6)), 0, None) ** 2
    env *= np.sin(2 * np.pi * 0.4 * t) > -0.3  # pauses
    return (0.3 * env * x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def frame_rms(x, n):
    return np.sqrt((fit_length(x, n).reshape(n, SPF) ** 2).mean(1))
