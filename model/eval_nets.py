"""The third-party networks some metrics need, re-implemented only to load their published
weights from a local path (nothing is ever downloaded):

- SyncNet "S" (Chung & Zisserman 2016; joonson/syncnet_python's `SyncNetModel.S`) for LSE-D /
  LSE-C: `syncnet_v2.model`, a state dict of `S` (`--syncnet PATH` or $FD2TALK_SYNCNET).

A missing file is a `Unavailable` naming it and where users get it: the metric is reported as
unavailable and the others still run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

SYNCNET_ENV = "FD2TALK_SYNCNET"
SYNCNET_HELP = ("syncnet_v2.model from joonson/syncnet_python (its download_model.sh fetches "
                "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model); pass "
                f"--syncnet PATH or set ${SYNCNET_ENV}")
VSHIFT = 15  # offsets -15..15 frames, as Wav2Lip's and the paper's evaluations use


class Unavailable(Exception):
    """A metric's weights are not here: the message names the file and where to get it."""


def weights_path(flag: str | None, env: str, name: str, help_: str) -> Path:
    """The weights file from the flag, else the environment variable; Unavailable if neither
    names an existing file."""
    path = flag or os.environ.get(env)
    if not path:
        raise Unavailable(f"{name}: no weights given ({help_})")
    if not Path(path).is_file():
        raise Unavailable(f"{name}: {path} not found ({help_})")
    return Path(path)


def _bn_relu(conv: nn.Module, ch: int, dims: int, inplace: bool = True) -> list[nn.Module]:
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](ch)
    return [conv, bn, nn.ReLU(inplace=inplace)]


class SyncNet(nn.Module):
    """syncnet_python's `S`, the same module names (so its state dict loads as saved): audio
    MFCC (N, 1, 13, 20) -> (N, 1024); lips, 5 BGR frames 224x224 in 0-255 (N, 3, 5, 224,
    224) -> (N, 1024)."""

    def __init__(self, fc: int = 1024):
        super().__init__()
        c2, c3 = nn.Conv2d, nn.Conv3d
        self.netcnnaud = nn.Sequential(
            *_bn_relu(c2(1, 64, 3, 1, 1), 64, 2), nn.MaxPool2d(1, 1),
            *_bn_relu(c2(64, 192, 3, 1, 1), 192, 2), nn.MaxPool2d(3, (1, 2)),
            *_bn_relu(c2(192, 384, 3, padding=1), 384, 2),
            *_bn_relu(c2(384, 256, 3, padding=1), 256, 2),
            *_bn_relu(c2(256, 256, 3, padding=1), 256, 2), nn.MaxPool2d(3, 2),
            *_bn_relu(c2(256, 512, (5, 4)), 512, 2, inplace=False))
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, fc))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, fc))
        self.netcnnlip = nn.Sequential(
            *_bn_relu(c3(3, 96, (5, 7, 7), (1, 2, 2)), 96, 3), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(c3(256, 512, (1, 6, 6)), 512, 3))

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path: str | None = None, device: str = "cpu") -> SyncNet:
    """SyncNet from `syncnet_v2.model` (flag, else $FD2TALK_SYNCNET). A file of another layout
    is Unavailable with the keys that differ."""
    path = weights_path(path, SYNCNET_ENV, "LSE-D/LSE-C", SYNCNET_HELP)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise Unavailable(f"LSE-D/LSE-C: {path} is not a readable weights file "
                          f"({type(e).__name__}: {e}); {SYNCNET_HELP}") from None
    net = SyncNet()
    missing = sorted(set(net.state_dict()) - set(state))
    extra = sorted(set(state) - set(net.state_dict()))
    if missing or extra:
        raise Unavailable(f"LSE-D/LSE-C: {path} is not syncnet_v2.model's layout (missing "
                          f"{missing[:3]}, unexpected {extra[:3]}); {SYNCNET_HELP}")
    net.load_state_dict(state)
    return net.eval().to(device)


def mfcc(samples: np.ndarray, sr: int = 16000) -> np.ndarray:
    """(13, T) MFCC at 100 Hz: python_speech_features' defaults, as syncnet_python computes it
    from 16-bit samples (float samples in [-1, 1] are scaled to that range first)."""
    import python_speech_features

    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
    return python_speech_features.mfcc(pcm, sr).T


@torch.no_grad()
def syncnet_embeddings(net: SyncNet, frames: np.ndarray, samples: np.ndarray,
                       batch: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-window embeddings (W, 1024) of the lips and the audio, syncnet_python's `evaluate`:
    frames (F, H, W, 3) uint8 RGB face crops (resized to 224 and turned BGR here), 16 kHz
    samples; window i = frames i..i+4 and MFCC columns 4i..4i+19; W = min(F, len/640) - 5."""
    import cv2

    device = next(net.parameters()).device
    cc = torch.from_numpy(mfcc(samples).astype(np.float32))[None, None]  # (1, 1, 13, T)
    n = min(len(frames), len(samples) // 640) - 5
    if n < 1:
        raise ValueError(f"LSE needs at least 6 frames of video and audio, got {n + 5}")
    bgr = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA)[..., ::-1]
                    for f in frames[:n + 5]])  # (F, 224, 224, 3)
    video = torch.from_numpy(bgr.astype(np.float32)).permute(3, 0, 1, 2)[None]  # (1, 3, F, ..)
    lips, auds = [], []
    for a in range(0, n, batch):
        idx = range(a, min(n, a + batch))
        lips.append(net.forward_lip(torch.cat([video[:, :, i:i + 5] for i in idx]).to(device)))
        auds.append(net.forward_aud(torch.cat([cc[..., 4 * i:4 * i + 20] for i in idx]
                                              ).to(device)))
    return torch.cat(lips).cpu().numpy(), torch.cat(auds).cpu().numpy()
