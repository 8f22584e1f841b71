"""Deep3D R-Net: 5-point alignment to 224x224 and the ResNet-50 -> 257 coefficient regressor.

The paper's coefficient backend (DESIGN.md sections 2, 4, 6): Deng et al. 2019,
"Accurate 3D Face Reconstruction with Weakly-Supervised Learning", as released in
Deep3DFaceRecon_pytorch (github.com/sicxu/Deep3DFaceRecon_pytorch, MIT). Ported
from its models/networks.py (`ReconNetWrapper`), util/preprocess.py (`POS`,
`resize_n_crop_img`, `align_img`) and util/load_mats.py (`load_lm3d`):

- `build_rnet()`: torchvision's ResNet-50 without its fc (`backbone.*`) plus
  `final_layers`, seven 1x1 convolutions 2048 -> 80 id, 64 exp, 80 tex,
  3 angles, 27 gamma, 2 txy, 1 tz; parameter names equal Deep3D's, so the
  published `epoch_20.pth` ({"net_recon": state_dict, ...}) loads unchanged.
  Input (B, 3, 224, 224) RGB in [0, 1]; output (B, 257) split by `COEFF_SLICES`.
- `align_img()`: Deep3D's preprocessing, step for step: the 5 points (y flipped
  to point up) are fitted to the standard 3D landmarks of
  `similarity_Lm3D_all.mat` by `pos` (least squares, scale and translation),
  the image is resized by 102 / scale with PIL bicubic and cropped to 224x224
  around the fitted centre.

Weights come from local files only: `--deep3d-checkpoint` / $FD2TALK_DEEP3D_CHECKPOINT
and `--bfm-dir` / $FD2TALK_BFM_DIR; a missing one is a PrepError saying where to get it.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np

from fd2talk.core.device import resolve_device
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends.weights import local_weight

INPUT_SIZE = 224  # R-Net input side (Deep3D's target_size)
RESCALE_FACTOR = 102.0  # Deep3D's rescale_factor: face scale in the 224 crop
FEATURE_DIM = 2048  # ResNet-50's pooled feature width
# Deep3D's final layers in order, and where each part sits in the 257-d vector.
FINAL_DIMS = (
    ("id", 80),
    ("exp", 64),
    ("tex", 80),
    ("angles", 3),
    ("gamma", 27),
    ("txy", 2),
    ("tz", 1),
)
COEFF_SLICES = {
    "id": slice(0, 80),
    "exp": slice(80, 144),
    "tex": slice(144, 224),
    "angles": slice(224, 227),
    "gamma": slice(227, 254),
    "trans": slice(254, 257),
}
COEFF_DIM = 257

CHECKPOINT_NAME = "epoch_20.pth"
CHECKPOINT_ENV = "FD2TALK_DEEP3D_CHECKPOINT"
CHECKPOINT_KEY = "net_recon"
LM3D_NAME = "similarity_Lm3D_all.mat"
BFM_ENV = "FD2TALK_BFM_DIR"
REPO_URL = "https://github.com/sicxu/Deep3DFaceRecon_pytorch"
CHECKPOINT_HINT = (
    f"get {CHECKPOINT_NAME} from the pretrained checkpoints linked in the README "
    f"of Deep3DFaceRecon_pytorch ({REPO_URL}, 'Inference with a pretrained "
    "model': checkpoints/<model_name>/epoch_20.pth)"
)
LM3D_HINT = (
    f"{LM3D_NAME} ships in the BFM folder of Deep3DFaceRecon_pytorch ({REPO_URL}/tree/"
    "master/BFM); pass that folder"
)
# Deep3D's 68-point indices (1-based) that make its 5 points, as in load_lm3d/extract_5p.
_LM68_FOR_5 = np.array([31, 37, 40, 43, 46, 49, 55]) - 1


# ---- local files ----------------------------------------------------------------------------


def checkpoint_path(flag: str | Path | None = None) -> Path:
    """Resolve the R-Net checkpoint: `flag`, else $FD2TALK_DEEP3D_CHECKPOINT."""
    return local_weight(
        flag,
        flag_name="--deep3d-checkpoint PATH",
        env=CHECKPOINT_ENV,
        name=f"Deep3DFaceRecon_pytorch's {CHECKPOINT_NAME}",
        hint=CHECKPOINT_HINT,
        alternative="--backend mediapipe",
    )


def lm3d_path(bfm_dir: str | Path | None = None) -> Path:
    """Resolve `similarity_Lm3D_all.mat` in `bfm_dir`, else in $FD2TALK_BFM_DIR."""
    return local_weight(
        bfm_dir,
        flag_name="--bfm-dir DIR",
        env=BFM_ENV,
        name=LM3D_NAME,
        hint=LM3D_HINT,
        member=LM3D_NAME,
    )


def load_lm3d(bfm_dir: str | Path | None = None) -> np.ndarray:
    """Deep3D's standard 5 points (5, 3) float32 from the 68 of `similarity_Lm3D_all.mat`."""
    from scipy.io import loadmat

    lm = loadmat(str(lm3d_path(bfm_dir)))["lm"]  # (68, 3)
    i = _LM68_FOR_5
    lm5 = np.stack([lm[i[0]], lm[i[[1, 2]]].mean(0), lm[i[[3, 4]]].mean(0), lm[i[5]], lm[i[6]]])
    return lm5[[1, 2, 0, 3, 4]]  # eyes, nose, mouth corners


# ---- alignment (Deep3D util/preprocess.py) ------------------------------------------------


def pos(xp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Deep3D's POS: 2D points xp (2, n) ~ affine projection of 3D points x (3, n).

    Returns the translation t (2, 1) and the mean norm s of the two projection rows.
    """
    n = xp.shape[1]
    a = np.zeros([2 * n, 8])
    a[0 : 2 * n - 1 : 2, 0:3] = x.T
    a[0 : 2 * n - 1 : 2, 3] = 1
    a[1 : 2 * n : 2, 4:7] = x.T
    a[1 : 2 * n : 2, 7] = 1
    b = np.reshape(xp.T, [2 * n, 1])
    k = np.linalg.lstsq(a, b, rcond=None)[0]  # (8, 1)
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.stack([k[3], k[7]], axis=0), s


def align_img(
    img: np.ndarray,
    lm5: np.ndarray,
    lm3d: np.ndarray,
    target_size: int = INPUT_SIZE,
    rescale_factor: float = RESCALE_FACTOR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deep3D's `align_img` on an (H, W, 3) uint8 RGB image and its 5 points (5, 2), y down.

    Returns the (224, 224, 3) uint8 crop, Deep3D's trans_params [W, H, scale, tx, ty]
    and the 5 points in the crop as Deep3D gives them (y up: row ~ 223 - y).
    """
    from PIL import Image

    h0, w0 = img.shape[:2]
    lm = np.asarray(lm5, np.float32).reshape(-1, 2).copy()
    lm[:, -1] = h0 - 1 - lm[:, -1]  # Deep3D's landmarks point y up
    t, s = pos(lm.T, np.asarray(lm3d).T)
    s = rescale_factor / s
    # resize_n_crop_img
    w, h = np.int32(w0 * s), np.int32(h0 * s)
    left = np.int32(w / 2 - target_size / 2 + float((t[0, 0] - w0 / 2) * s))
    up = np.int32(h / 2 - target_size / 2 + float((h0 / 2 - t[1, 0]) * s))
    pil = Image.fromarray(np.ascontiguousarray(img)).resize(
        (int(w), int(h)), resample=Image.Resampling.BICUBIC
    )
    crop = np.asarray(
        pil.crop((int(left), int(up), int(left) + target_size, int(up) + target_size))
    )
    lm_new = np.stack([lm[:, 0] - t[0] + w0 / 2, lm[:, 1] - t[1] + h0 / 2], axis=1) * s
    lm_new = lm_new - np.array([w / 2 - target_size / 2, h / 2 - target_size / 2])
    params = np.array([w0, h0, s, t[0, 0], t[1, 0]], np.float64)
    return crop, params, lm_new


# ---- the network (Deep3D models/networks.py ReconNetWrapper) --------------------------------


@functools.cache
def rnet_class() -> type:
    """The R-Net class (defined on first use so torch loads only when needed)."""
    import torch
    import torchvision
    from torch import nn

    class ReconNet(nn.Module):
        """ResNet-50 backbone + seven 1x1 conv heads -> (B, 257) coefficients."""

        def __init__(self):
            super().__init__()
            backbone = torchvision.models.resnet50(weights=None)
            backbone.fc = nn.Identity()  # Deep3D builds it without fc: no fc.* parameters
            self.backbone = backbone
            # Deep3D zero-initialises these; the default init keeps random test nets informative.
            self.final_layers = nn.ModuleList(
                [nn.Conv2d(FEATURE_DIM, dim, kernel_size=1, bias=True) for _, dim in FINAL_DIMS]
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """x: (B, 3, 224, 224) RGB in [0, 1] -> (B, 257)."""
            feat = self.backbone(x)[:, :, None, None]  # (B, 2048, 1, 1)
            return torch.flatten(torch.cat([f(feat) for f in self.final_layers], dim=1), 1)

    return ReconNet


def build_rnet():
    """A randomly initialised R-Net (the published weights load into it by `load_rnet`)."""
    return rnet_class()()


def load_rnet(path: str | Path | None = None, device: str = "auto"):
    """Load Deep3D's `epoch_20.pth` (state dict under "net_recon") into an R-Net in eval mode."""
    import torch

    path = checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise PrepError(
            f"cannot read the Deep3D checkpoint {path}: {e}; {CHECKPOINT_HINT}"
        ) from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        found = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise PrepError(
            f"{path} is not a Deep3DFaceRecon_pytorch checkpoint: it holds no "
            f"{CHECKPOINT_KEY!r} (found {found}); {CHECKPOINT_HINT}"
        )
    state = {k.removeprefix("module."): v for k, v in ckpt[CHECKPOINT_KEY].items()}
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        net = build_rnet()
    expected = set(net.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise PrepError(
            f"{path}: {CHECKPOINT_KEY} does not match the R-Net layout: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
            f"{CHECKPOINT_HINT}"
        )
    net.load_state_dict(state, assign=True)
    return prepare_rnet(net, device)


def prepare_rnet(net, device: str = "auto"):
    """Eval mode, on `device`. (Channels-last weights ran 5x slower on this CPU; the
    channels-last input `rnet_forward` passes, with default weights, is the fast case.)"""
    return net.to(resolve_device(device)).eval()


def rnet_forward(net, crops: np.ndarray):
    """(N, 224, 224, 3) uint8 aligned crops -> (N, 257) float32 tensor on the net's device.

    Does not synchronise: on CUDA the caller may keep working while it runs.
    """
    import torch

    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device, non_blocking=True)
    # (N, 3, 224, 224) in [0, 1], channels-last strides (from NHWC), kept by .float()
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    with torch.inference_mode():
        return net(x)  # (N, 257)


def bare_inference(net, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """R-Net alone over (N, 224, 224, 3) uint8 crops in batches (for the bench) -> (N, 257)."""
    import torch

    outs = [rnet_forward(net, crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
    return torch.cat(outs).float().cpu().numpy() if outs else np.zeros((0, COEFF_DIM), np.float32)


def split_coeffs(coeffs: np.ndarray) -> dict[str, np.ndarray]:
    """(..., 257) -> {"id": 80, "exp": 64, "tex": 80, "angles": 3, "gamma": 27, "trans": 3}."""
    return {name: coeffs[..., sl] for name, sl in COEFF_SLICES.items()}
