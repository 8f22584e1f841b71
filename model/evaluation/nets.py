"""The third-party networks some metrics need, re-implemented only to load their published
weights from a local path (nothing is ever downloaded):

- SyncNet "S" (Chung & Zisserman 2016; joonson/syncnet_python's `SyncNetModel.S`) for LSE-D /
  LSE-C: `syncnet_v2.model`, a state dict of `S` (`--syncnet PATH` or $FD2TALK_SYNCNET).
- Hopenet (Ruiz et al. 2018; natanielruiz/deep-head-pose's `hopenet.Hopenet`, ResNet-50, 66
  bins of 3 degrees) for the paper's diversity and beat align: `hopenet_robust_alpha1.pkl`
  (`--hopenet PATH` or $FD2TALK_HOPENET).
- FID's Inception-v3: pytorch-fid's own network and code, its weights file
  `pt_inception-2015-12-05-6726825d.pth` read from a local path (`--inception PATH` or
  $FD2TALK_INCEPTION) instead of the URL pytorch-fid would download it from.

A missing file is a `Unavailable` naming it and where users get it: the metric is reported as
unavailable and the others still run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fd2talk.core.schema import SAMPLE_RATE, SAMPLES_PER_FRAME

SYNCNET_ENV = "FD2TALK_SYNCNET"
SYNCNET_HELP = (
    "syncnet_v2.model from joonson/syncnet_python (its download_model.sh fetches "
    "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model); pass "
    f"--syncnet PATH or set ${SYNCNET_ENV}"
)
HOPENET_ENV = "FD2TALK_HOPENET"
HOPENET_HELP = (
    "hopenet_robust_alpha1.pkl from natanielruiz/deep-head-pose (its README links "
    f"the 300W-LP alpha 1 robust model); pass --hopenet PATH or set ${HOPENET_ENV}"
)
INCEPTION_ENV = "FD2TALK_INCEPTION"
INCEPTION_HELP = (
    "pt_inception-2015-12-05-6726825d.pth from pytorch-fid's releases "
    "(github.com/mseitzer/pytorch-fid/releases/download/fid_weights/); pass "
    f"--inception PATH or set ${INCEPTION_ENV}"
)
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
            *_bn_relu(c2(1, 64, 3, 1, 1), 64, 2),
            nn.MaxPool2d(1, 1),
            *_bn_relu(c2(64, 192, 3, 1, 1), 192, 2),
            nn.MaxPool2d(3, (1, 2)),
            *_bn_relu(c2(192, 384, 3, padding=1), 384, 2),
            *_bn_relu(c2(384, 256, 3, padding=1), 256, 2),
            *_bn_relu(c2(256, 256, 3, padding=1), 256, 2),
            nn.MaxPool2d(3, 2),
            *_bn_relu(c2(256, 512, (5, 4)), 512, 2, inplace=False),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, fc)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, fc)
        )
        self.netcnnlip = nn.Sequential(
            *_bn_relu(c3(3, 96, (5, 7, 7), (1, 2, 2)), 96, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(c3(256, 512, (1, 6, 6)), 512, 3),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))


def _state(path: Path, what: str, file: str, help_: str, want: dict) -> dict:
    """The state dict in `path`, checked against the keys and shapes of `want`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise Unavailable(
            f"{what}: {path} is not a readable weights file ({type(e).__name__}: {e}); {help_}"
        ) from None
    if not isinstance(state, dict):
        raise Unavailable(f"{what}: {path} holds no state dict; {help_}")
    # files saved before PyTorch 0.4.1 (Hopenet's, maybe SyncNet's) have no BatchNorm
    # `num_batches_tracked`: it only counts training steps, and is 0 when absent
    state = {
        **{
            k: torch.zeros((), dtype=torch.long)
            for k in want
            if k.endswith("num_batches_tracked") and k not in state
        },
        **state,
    }
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    shapes = sorted(
        k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape)
    )
    if missing or extra or shapes:
        raise Unavailable(
            f"{what}: {path} is not {file}'s layout (missing {missing[:3]}, "
            f"unexpected {extra[:3]}, other shapes {shapes[:3]}); {help_}"
        )
    return state


def load_syncnet(path: str | None = None, device: str = "cpu") -> SyncNet:
    """SyncNet from `syncnet_v2.model` (flag, else $FD2TALK_SYNCNET). A file of another layout
    is Unavailable with the keys that differ."""
    path = weights_path(path, SYNCNET_ENV, "LSE-D/LSE-C", SYNCNET_HELP)
    net = SyncNet()
    net.load_state_dict(
        _state(path, "LSE-D/LSE-C", "syncnet_v2.model", SYNCNET_HELP, net.state_dict())
    )
    return net.eval().to(device)


class Hopenet(nn.Module):
    """deep-head-pose's Hopenet with the same module names: torchvision's ResNet-50 trunk,
    a 7x7 average pool and three 66-bin heads (plus its unused `fc_finetune`, which the
    published file holds). (N, 3, 224, 224) ImageNet-normalised -> yaw, pitch, roll logits."""

    def __init__(self, bins: int = 66):
        super().__init__()
        from torchvision.models.resnet import Bottleneck, ResNet

        trunk = ResNet(Bottleneck, [3, 4, 6, 3])
        self.conv1, self.bn1, self.relu, self.maxpool = (
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
        )
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            trunk.layer1,
            trunk.layer2,
            trunk.layer3,
            trunk.layer4,
        )
        self.avgpool = nn.AvgPool2d(7)
        self.fc_yaw, self.fc_pitch, self.fc_roll = (nn.Linear(2048, bins) for _ in range(3))
        self.fc_finetune = nn.Linear(2048 + 3, 3)  # vestigial in the original, kept to load

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x).flatten(1)
        return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)


def load_hopenet(path: str | None = None, device: str = "cpu") -> Hopenet:
    """Hopenet from `hopenet_robust_alpha1.pkl` (flag, else $FD2TALK_HOPENET)."""
    path = weights_path(path, HOPENET_ENV, "Diversity/Beat Align (Hopenet)", HOPENET_HELP)
    net = Hopenet()
    net.load_state_dict(
        _state(
            path,
            "Diversity/Beat Align (Hopenet)",
            "hopenet_robust_alpha1.pkl",
            HOPENET_HELP,
            net.state_dict(),
        )
    )
    return net.eval().to(device)


@torch.no_grad()
def hopenet_angles(net: Hopenet, frames: np.ndarray, batch: int = 32) -> np.ndarray:
    """(F, 3) yaw, pitch, roll in degrees of face crops (F, H, W, 3) uint8 RGB, as
    deep-head-pose's test_on_video does it: the shorter side scaled to 224 (bilinear), a
    centre 224 crop, ImageNet normalisation, then each angle the softmax expectation over its
    66 bins, times 3, minus 99."""
    import torch.nn.functional as F

    device = next(net.parameters()).device
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    idx = torch.arange(66, dtype=torch.float32, device=device)
    out = []
    for a in range(0, len(frames), batch):
        x = torch.from_numpy(frames[a : a + batch]).to(device).permute(0, 3, 1, 2).float() / 255
        h, w = x.shape[2:]
        k = 224 / min(h, w)
        x = F.interpolate(
            x,
            size=(max(224, round(h * k)), max(224, round(w * k))),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        top, left = (x.shape[2] - 224) // 2, (x.shape[3] - 224) // 2
        x = (x[:, :, top : top + 224, left : left + 224] - mean) / std
        out.append(torch.stack([(F.softmax(y, 1) * idx).sum(1) * 3 - 99 for y in net(x)], 1))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def load_inception(path: str | None = None, device: str = "cpu"):
    """pytorch-fid's `InceptionV3` (pool3, 2048-d; its resizing to 299 and scaling to [-1, 1])
    with the weights of `pt_inception-2015-12-05-6726825d.pth` from a local path (flag, else
    $FD2TALK_INCEPTION). pytorch-fid fetches that file by URL inside its builder; its loader
    is pointed at the local file for the duration of the build, so nothing is downloaded."""
    from pytorch_fid import inception as fid_inception

    path = weights_path(path, INCEPTION_ENV, "FID", INCEPTION_HELP)
    want = fid_state_layout()
    state = _state(path, "FID", "pt_inception-2015-12-05-6726825d.pth", INCEPTION_HELP, want)
    fetch = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda *a, **k: state
    try:
        net = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        fid_inception.load_state_dict_from_url = fetch
    return net.eval().to(device)


def fid_inception_network() -> nn.Module:
    """pytorch-fid's FID Inception (its `fid_inception_v3` structure), randomly initialised:
    the layout the weights file must have (and what tests build stand-in files from)."""
    from pytorch_fid import inception as I

    net = I._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = I.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = I.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = I.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = I.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = I.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = I.FIDInceptionE_1(1280)
    net.Mixed_7c = I.FIDInceptionE_2(2048)
    return net


def fid_state_layout() -> dict:
    return fid_inception_network().state_dict()


@torch.no_grad()
def inception_features(net, frames: np.ndarray, batch: int = 50) -> np.ndarray:
    """(N, 2048) pool3 features of frames (N, H, W, 3) uint8 RGB, as pytorch-fid computes
    them from image files (RGB in [0, 1]; the network resizes and rescales)."""
    device = next(net.parameters()).device
    out = []
    for a in range(0, len(frames), batch):
        x = torch.from_numpy(frames[a : a + batch]).to(device).permute(0, 3, 1, 2).float() / 255
        out.append(net(x)[0].flatten(1))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def mfcc(samples: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(13, T) MFCC at 100 Hz: python_speech_features' defaults, as syncnet_python computes it
    from 16-bit samples (float samples in [-1, 1] are scaled to that range first)."""
    import python_speech_features

    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
    return python_speech_features.mfcc(pcm, sr).T


@torch.no_grad()
def syncnet_embeddings(
    net: SyncNet, frames: np.ndarray, samples: np.ndarray, batch: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Per-window embeddings (W, 1024) of the lips and the audio, syncnet_python's `evaluate`:
    frames (F, H, W, 3) uint8 RGB face crops (resized to 224 and turned BGR here), 16 kHz
    samples; window i = frames i..i+4 and MFCC columns 4i..4i+19; W = min(F, len/640) - 5."""
    import cv2

    device = next(net.parameters()).device
    cc = torch.from_numpy(mfcc(samples).astype(np.float32))[None, None]  # (1, 1, 13, T)
    n = min(len(frames), len(samples) // SAMPLES_PER_FRAME) - 5
    if n < 1:
        raise ValueError(f"LSE needs at least 6 frames of video and audio, got {n + 5}")
    bgr = np.stack(
        [
            cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA)[..., ::-1]
            for f in frames[: n + 5]
        ]
    )  # (F, 224, 224, 3)
    video = torch.from_numpy(bgr.astype(np.float32)).permute(3, 0, 1, 2)[None]  # (1, 3, F, ..)
    lips, auds = [], []
    for a in range(0, n, batch):
        idx = range(a, min(n, a + batch))
        lips.append(net.forward_lip(torch.cat([video[:, :, i : i + 5] for i in idx]).to(device)))
        auds.append(
            net.forward_aud(torch.cat([cc[..., 4 * i : 4 * i + 20] for i in idx]).to(device))
        )
    return torch.cat(lips).cpu().numpy(), torch.cat(auds).cpu().numpy()
