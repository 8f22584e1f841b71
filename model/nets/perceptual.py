"""LPIPS-VGG perceptual distance from local weights, for fine-tuning the stage-2 autoencoder
(paper section 3.3: L = λ_rec ||F2 - D([E(F1), E(F2)])||^2 + λ_per LPIPS; DESIGN.md section 4).

The network is `lpips.LPIPS(net="vgg")` of lpips 0.1.4 (Zhang et al. 2018, v0.1):

    a, b (N,3,H,W) in [-1,1] ──scaling layer──► VGG16 features relu1_2 .. relu5_3 (5 levels)
    per level l: unit-normalise over channels, (f_a - f_b)^2 ──1x1 conv w_l──► spatial mean
    LPIPS(a, b) = sum over l  -> (N,)

Two weight files, neither ever downloaded:
- the linear heads w_l ship inside the lpips wheel (`lpips/weights/v0.1/vgg.pth`);
- the VGG16 backbone is torchvision's ImageNet file `vgg16-397923af.pth`, from a path: the
  `vgg_weights` argument (a CLI flag), else $FD2TALK_VGG16, else torchvision's cache location
  `<torch hub dir>/checkpoints/vgg16-397923af.pth` (~/.cache/torch/hub/checkpoints/...). Only its
  `features.*` tensors are read, so a file holding just those loads too.

lpips builds its backbone with `torchvision.models.vgg16(pretrained=False)`; torchvision 0.29
still accepts that (with deprecation warnings, silenced here) and builds a randomly initialised
network, whose features we then overwrite from the local file. The module is frozen: no
parameter takes gradients and `train()` keeps it in eval mode (LPIPS' heads contain dropout),
while gradients flow to the input images.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from fd2talk.core.errors import UserError

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 VGG16 file name
VGG16_ENV = "FD2TALK_VGG16"
VGG16_HINT = (
    'on a machine with internet, `python -c "import torchvision; torchvision.models.vgg16('
    "weights='IMAGENET1K_V1')\"` writes it to ~/.cache/torch/hub/checkpoints/; copy it here and "
    f"pass its path (the VGG16 flag or ${VGG16_ENV}), or train with `--lambda-per 0` to drop the "
    "perceptual term"
)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # conv indices in `features`
LPIPS_VERSION = "0.1"
LPIPS_NET = "vgg"
# lpips' deprecation warnings from torchvision (its `pretrained=` call): harmless at 0.29
_TORCHVISION_WARNINGS = (
    r"The parameter 'pretrained' is deprecated",
    r"Arguments other than a weight enum",
)


def default_vgg16_path() -> Path:
    """Where torchvision itself caches the file: <torch.hub.get_dir()>/checkpoints/VGG16_FILE."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def vgg16_path(flag: str | Path | None = None) -> Path:
    """Resolve the VGG16 weights: `flag`, else $FD2TALK_VGG16, else the torchvision cache.

    A missing file is a UserError naming the path, where it came from and how to get it.
    """
    if flag:
        path, source = Path(flag), "the VGG16 flag"
    elif os.environ.get(VGG16_ENV):
        path, source = Path(os.environ[VGG16_ENV]), f"${VGG16_ENV}"
    else:
        path, source = default_vgg16_path(), "torchvision's default location"
    path = path.expanduser()
    if not path.is_file():
        raise UserError(
            f"VGG16 weights {VGG16_FILE} for the LPIPS loss not found at {path} "
            f"(from {source}): {VGG16_HINT}"
        )
    return path


def _lpips_heads_file() -> Path:
    """lpips' bundled linear-head weights (lpips/weights/v0.1/vgg.pth), without importing it."""
    from importlib.util import find_spec

    spec = find_spec("lpips")
    if spec is None or spec.origin is None:
        raise UserError("the lpips package is not installed: `pip install lpips==0.1.4`")
    path = Path(spec.origin).parent / "weights" / f"v{LPIPS_VERSION}" / f"{LPIPS_NET}.pth"
    if not path.is_file():
        raise UserError(
            f"lpips' linear-head weights {path} are missing: reinstall "
            "`pip install --force-reinstall lpips==0.1.4`"
        )
    return path


def _load_features(path: Path) -> dict[str, torch.Tensor]:
    """The `features.*` tensors of a torchvision VGG16 state dict file (memory-mapped)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UserError(
            f"{path} is not a readable torch state dict ({str(e).strip()[:200]}): {VGG16_HINT}"
        ) from None
    if not isinstance(state, dict):
        raise UserError(
            f"{path} holds a {type(state).__name__}, not a VGG16 state dict: {VGG16_HINT}"
        )
    for index in VGG16_CONVS:  # checked before lpips builds its (slow) network
        for kind in ("weight", "bias"):
            if f"features.{index}.{kind}" not in state:
                raise UserError(
                    f"{path} has no features.{index}.{kind}: is it torchvision's "
                    f"VGG16 ({VGG16_FILE})? {VGG16_HINT}"
                )
    return {k: v for k, v in state.items() if k.startswith("features.")}


class Perceptual(nn.Module):
    """Frozen LPIPS-VGG: forward(a, b) (N,3,H,W) in [-1,1] -> (N,) distances."""

    def __init__(self, vgg_weights: str | Path | None = None):
        super().__init__()
        self.weights_path = vgg16_path(vgg_weights)
        heads = _lpips_heads_file()
        features = _load_features(self.weights_path)
        import lpips

        with warnings.catch_warnings():
            for message in _TORCHVISION_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            # pretrained=True: linear heads from `heads`; pnet_rand=True: no backbone download
            self.lpips = lpips.LPIPS(
                pretrained=True,
                net=LPIPS_NET,
                version=LPIPS_VERSION,
                pnet_rand=True,
                model_path=str(heads),
                verbose=False,
            )
        # lpips' backbone keeps torchvision's layer indices inside its 5 slices:
        # features.<i>.weight -> slice<k>.<i>.weight
        wanted = self.lpips.net.state_dict()
        mapped = {}
        for key in wanted:
            _, index, kind = key.split(".")  # "slice1", "0", "weight"
            source = f"features.{index}.{kind}"
            if source not in features:
                raise UserError(
                    f"{self.weights_path} has no {source}: is it torchvision's "
                    f"VGG16 ({VGG16_FILE})? {VGG16_HINT}"
                )
            mapped[key] = features[source]
        try:
            self.lpips.net.load_state_dict(mapped, strict=True)
        except RuntimeError as e:
            raise UserError(
                f"{self.weights_path} does not fit VGG16 ({str(e).strip()[:300]}): {VGG16_HINT}"
            ) from None
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Perceptual:
        """Always eval: the loss network is frozen (its dropout stays off)."""
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b (N,3,H,W) in [-1,1] -> LPIPS distances (N,); differentiable in a and b."""
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(
                f"expected two (N, 3, H, W) images of one shape, got "
                f"{tuple(a.shape)} and {tuple(b.shape)}"
            )
        return self.lpips(a, b, normalize=False).reshape(a.shape[0])  # (N,1,1,1) -> (N,)
