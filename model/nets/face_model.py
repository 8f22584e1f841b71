"""The linear face model of paper eq. 1, restricted to the mouth (section 3.2 lip expert;
DESIGN.md sections 1 and 6).

    S = S_bar + B_id alpha + B_exp beta            (eq. 1, only the M mouth points of S)

`FaceModel` is a differentiable `nn.Module` whose bases are buffers (saved in its state_dict):
the motion trainer maps predicted expressions beta to mouth points and backpropagates the lip
expert's L_sync through it into beta. Two ways to build one, one per coefficient backend:

- `from_bfm` (deep3d, the paper's): Deep3DFaceRecon's `BFM_model_front.mat` (meanshape,
  idBase (3N, 80), exBase (3N, 64), keypoints (68,) 1-based), mouth = the vertices of the 20
  mouth keypoints 48:68. The mean shape is recentred on the mean of all its vertices, as
  Deep3D's `ParametricFaceModel(recenter=True)` does, so the points are those of Deep3D's mesh.
- `fit_mediapipe` (offline): alpha is the coefficients stage's `id` (mean canonical landmarks,
  478 x 3 flattened), so B_id is the 0/1 matrix that selects the mouth coordinates from it, and
  S_bar, B_exp are fitted by ridge least squares of (lm3d_mouth - B_id alpha) on [beta, 1]
  over the valid frames (normal equations accumulated per sample, so it streams). The fit's
  R^2 is kept in `model.fit_report` (not in the state_dict) and logged.

| code        | paper  | shape        |
|-------------|--------|--------------|
| `mean`      | S_bar  | (3M,)        |
| `id_basis`  | B_id   | (3M, D_id)   |
| `exp_basis` | B_exp  | (3M, D_exp)  |
| `alpha`     | alpha  | (..., D_id)  |
| `beta`      | beta   | (..., D_exp) |

Coordinates are interleaved per point (x0, y0, z0, x1, ...), as in the BFM file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fd2talk.core.errors import UserError

log = logging.getLogger(__name__)

BACKENDS = ("deep3d", "mediapipe")

# MediaPipe face mesh: the 40 landmarks of FACEMESH_LIPS (outer and inner lip contours), sorted
# (= sorted set of the endpoints of mediapipe's FaceLandmarksConnections.FACE_LANDMARKS_LIPS).
MOUTH: tuple[int, ...] = (
    0,
    13,
    14,
    17,
    37,
    39,
    40,
    61,
    78,
    80,
    81,
    82,
    84,
    87,
    88,
    91,
    95,
    146,
    178,
    181,
    185,
    191,
    267,
    269,
    270,
    291,
    308,
    310,
    311,
    312,
    314,
    317,
    318,
    321,
    324,
    375,
    402,
    405,
    409,
    415,
)
MP_POINTS = 478  # MediaPipe landmarks per face (468 mesh + 10 iris)

# Deep3D / BFM: the 68 keypoints' mouth part (outer 48:60 and inner 60:68 lip contours).
BFM_MOUTH_KEYPOINTS = slice(48, 68)
BFM_NAME = "BFM_model_front.mat"
BFM_ENV = "FD2TALK_BFM_DIR"  # the folder Deep3D calls BFM (also holds similarity_Lm3D_all.mat)
BFM_HINT = (
    f"{BFM_NAME} is Deep3DFaceRecon_pytorch's converted Basel Face Model: get BFM09 "
    "(01_MorphableModel.mat) from the Basel Face Model site "
    "(https://faces.dmi.unibas.ch/bfm/main.php?nav=1-2&id=downloads) and Exp_Pca.bin "
    "(the expression basis linked in Deep3DFaceRecon_pytorch's README), put both in its "
    "BFM folder and let its util/load_mats.py write "
    f"{BFM_NAME}; then pass that folder or file"
)

# Ridge of the mediapipe fit, relative to the mean diagonal of beta's Gram matrix (so it does
# not fade with more frames). Measured on the shared clips (one clip fitted, another tested):
# held-out R^2 0.30 at 1e-4, 0.55 at 1e-2, 0.55 at 3e-2, 0.51 at 1e-1; in-sample 0.95 -> 0.91.
RIDGE = 1e-2


@dataclass(frozen=True)
class FitReport:
    """How well the fitted linear map explains the mouth points (over valid frames).

    r2 = 1 - ss_res / ss_tot, with ss_tot the variance of (lm3d_mouth - B_id alpha) about its
    per-coordinate mean, i.e. of the mouth's motion around each clip's mean mouth: the share of
    mouth motion that the expression coefficients explain.
    """

    frames: int  # valid frames used
    r2: float
    rmse: float  # root mean squared residual per coordinate (cm for mediapipe)
    std: float  # root mean squared deviation of the target about its mean (the r2 = 0 level)


class FaceModel(nn.Module):
    """Mouth points of eq. 1: forward(beta (..., D_exp), alpha (..., D_id)) -> (..., M, 3).

    `alpha` broadcasts against `beta`'s leading dims, where a missing dim of alpha is a
    trailing one of beta's: alpha (N, D_id) with beta (N, F, D_exp) gives (N, F, M, 3) (one
    identity per sequence). alpha=None means alpha = 0 (S_bar + B_exp beta).
    """

    mean: torch.Tensor
    id_basis: torch.Tensor
    exp_basis: torch.Tensor

    def __init__(
        self, mean, id_basis, exp_basis, backend: str, vertex_ids: Iterable[int] | None = None
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {BACKENDS}")
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)  # (3M,)
        id_basis = torch.as_tensor(np.asarray(id_basis), dtype=torch.float32)  # (3M, D_id)
        exp_basis = torch.as_tensor(np.asarray(exp_basis), dtype=torch.float32)  # (3M, D_exp)
        if (
            mean.numel() % 3
            or id_basis.shape[0] != mean.numel()
            or exp_basis.shape[0] != mean.numel()
            or id_basis.ndim != 2
            or exp_basis.ndim != 2
        ):
            raise ValueError(
                f"bases disagree: mean {tuple(mean.shape)}, id_basis "
                f"{tuple(id_basis.shape)}, exp_basis {tuple(exp_basis.shape)} "
                "(expected (3M,), (3M, D_id), (3M, D_exp))"
            )
        self.register_buffer("mean", mean.contiguous())
        self.register_buffer("id_basis", id_basis.contiguous())
        self.register_buffer("exp_basis", exp_basis.contiguous())
        self.backend = backend
        # Which points of the full face these are (BFM vertex ids 0-based / MediaPipe landmarks).
        self.vertex_ids = tuple(int(i) for i in vertex_ids) if vertex_ids is not None else None
        self.fit_report: FitReport | None = None

    # ---- properties ----------------------------------------------------------------------------

    @property
    def n_points(self) -> int:
        return self.mean.numel() // 3

    @property
    def exp_dim(self) -> int:
        return self.exp_basis.shape[1]

    @property
    def id_dim(self) -> int:
        return self.id_basis.shape[1]

    # ---- eq. 1 ---------------------------------------------------------------------------------

    def forward(self, beta: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        if beta.shape[-1] != self.exp_dim:
            raise ValueError(f"beta has {beta.shape[-1]} dims, this face model {self.exp_dim}")
        s = self.mean + beta.to(self.exp_basis.dtype) @ self.exp_basis.T  # (..., 3M)
        if alpha is not None:
            if alpha.shape[-1] != self.id_dim:
                raise ValueError(f"alpha has {alpha.shape[-1]} dims, this face model {self.id_dim}")
            ident = alpha.to(self.id_basis.dtype) @ self.id_basis.T  # (..., 3M)
            while ident.ndim < s.ndim:  # alpha (N, D_id) vs beta (N, F, D_exp): per sequence
                ident = ident.unsqueeze(-2)
            s = s + ident
        return s.unflatten(-1, (self.n_points, 3))  # (..., M, 3)

    def identity_points(self, alpha: torch.Tensor) -> torch.Tensor:
        """(..., D_id) -> (..., M, 3): S_bar + B_id alpha (the face with beta = 0)."""
        return (self.mean + alpha.to(self.id_basis.dtype) @ self.id_basis.T).unflatten(
            -1, (self.n_points, 3)
        )

    # ---- state ---------------------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        return {"backend": self.backend, "vertex_ids": self.vertex_ids}

    def set_extra_state(self, state: dict) -> None:
        self.backend = state["backend"]
        self.vertex_ids = state["vertex_ids"]

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], prefix: str = "") -> FaceModel:
        """Rebuild a FaceModel saved with `state_dict()` (e.g. inside a checkpoint)."""
        extra = state.get(prefix + "_extra_state") or {}
        model = cls(
            state[prefix + "mean"],
            state[prefix + "id_basis"],
            state[prefix + "exp_basis"],
            extra.get("backend", "deep3d"),
            extra.get("vertex_ids"),
        )
        return model

    def to_state(self) -> dict:
        """Plain dict for a checkpoint: the three bases (CPU tensors), backend, vertex ids and
        the fit report (a dict, or None); `from_state` rebuilds the model from it."""
        report = self.fit_report
        return {
            "mean": self.mean.detach().cpu().clone(),
            "id_basis": self.id_basis.detach().cpu().clone(),
            "exp_basis": self.exp_basis.detach().cpu().clone(),
            "backend": self.backend,
            "vertex_ids": list(self.vertex_ids) if self.vertex_ids is not None else None,
            "fit_report": dataclasses.asdict(report) if report is not None else None,
        }

    @classmethod
    def from_state(cls, state: Mapping) -> FaceModel:
        """Inverse of `to_state` (also accepts a `state_dict()`)."""
        if "_extra_state" in state:
            return cls.from_state_dict(state)
        model = cls(
            state["mean"],
            state["id_basis"],
            state["exp_basis"],
            state["backend"],
            state.get("vertex_ids"),
        )
        if state.get("fit_report"):
            model.fit_report = FitReport(**state["fit_report"])
        return model

    def extra_repr(self) -> str:
        return (
            f"backend={self.backend!r}, n_points={self.n_points}, id_dim={self.id_dim}, "
            f"exp_dim={self.exp_dim}"
        )

    # ---- builders ------------------------------------------------------------------------------

    @classmethod
    def from_bfm(cls, path: str | Path | None = None) -> FaceModel:
        """Mouth part of Deep3D's `BFM_model_front.mat`; `path` is the file or its folder
        (None: $FD2TALK_BFM_DIR). A missing file is a UserError saying how to get it."""
        from scipy.io import loadmat

        path = bfm_path(path)
        mat = loadmat(str(path))
        mean = np.asarray(mat["meanshape"], np.float64).reshape(-1, 3)  # (N, 3)
        id_base = np.asarray(mat["idBase"], np.float32)  # (3N, 80)
        ex_base = np.asarray(mat["exBase"], np.float32)  # (3N, 64)
        keypoints = np.asarray(mat["keypoints"]).reshape(-1).astype(np.int64) - 1  # (68,) 0-based
        if len(keypoints) != 68 or id_base.shape[0] != mean.size or ex_base.shape[0] != mean.size:
            raise UserError(
                f"{path}: not Deep3D's {BFM_NAME} layout (meanshape {mean.size}, "
                f"idBase {id_base.shape}, exBase {ex_base.shape}, "
                f"{len(keypoints)} keypoints; expected 3N, (3N, 80), (3N, 64), 68)"
            )
        mean = mean - mean.mean(0, keepdims=True)  # Deep3D's recenter=True
        verts = keypoints[BFM_MOUTH_KEYPOINTS]  # (20,)
        rows = (3 * verts[:, None] + np.arange(3)).reshape(-1)  # (60,) interleaved x, y, z
        return cls(mean.reshape(-1)[rows], id_base[rows], ex_base[rows], "deep3d", verts)

    @classmethod
    def fit_mediapipe(
        cls, samples: Iterable[Mapping[str, np.ndarray]], ridge: float = RIDGE
    ) -> FaceModel:
        """Fit S_bar and B_exp of the mouth on samples with numpy arrays exp (F, 52),
        lm3d (F, 478, 3), id (1434,), valid (F,); B_id selects the mouth from id.
        The in-sample fit quality is in `model.fit_report` (and logged)."""
        normal = _NormalEquations()
        for sample in samples:
            normal.add(sample)
        if normal.frames == 0:
            raise UserError(
                "no valid frames to fit the mediapipe mouth model on: the samples "
                "have no frame with valid=True"
            )
        coef = normal.solve(ridge)  # (D_exp + 1, 3M)
        model = cls(coef[-1], mouth_selection(), coef[:-1].T, "mediapipe", MOUTH)
        model.fit_report = normal.report(coef)
        log.info(
            "mediapipe mouth model: R^2 %.4f, rmse %.4f cm over %d frames",
            model.fit_report.r2,
            model.fit_report.rmse,
            model.fit_report.frames,
        )
        return model

    def evaluate(self, samples: Iterable[Mapping[str, np.ndarray]]) -> FitReport:
        """R^2 of this (mediapipe) model on other samples (same dict layout as fit_mediapipe),
        e.g. held-out clips; r2 is relative to the samples' own mean of the target."""
        if self.backend != "mediapipe":
            raise ValueError(
                "evaluate() scores a mediapipe face model on MediaPipe landmarks; "
                f"this one is {self.backend!r}"
            )
        normal = _NormalEquations()
        for sample in samples:
            normal.add(sample)
        coef = torch.cat([self.exp_basis.T, self.mean[None]]).double().numpy()  # (D_exp+1, 3M)
        return normal.report(coef)


# ---- helpers ------------------------------------------------------------------------------------


def bfm_path(path: str | Path | None = None) -> Path:
    """Resolve BFM_model_front.mat: `path` (the file or its folder), else $FD2TALK_BFM_DIR."""
    value = path or os.environ.get(BFM_ENV)
    if not value:
        raise UserError(
            f"{BFM_NAME} is needed for the deep3d face model: pass its folder (or "
            f"the file) or set {BFM_ENV} ({BFM_HINT}), or use the mediapipe backend"
        )
    p = Path(value).expanduser()
    if p.is_dir():
        p = p / BFM_NAME
    if not p.is_file():
        source = "the path given" if path else BFM_ENV
        raise UserError(f"{BFM_NAME} not found at {p} (from {source}): {BFM_HINT}")
    return p


def mouth_selection() -> np.ndarray:
    """(3M, 1434) 0/1 matrix picking the mouth coordinates out of a flattened (478, 3) face."""
    cols = (3 * np.asarray(MOUTH)[:, None] + np.arange(3)).reshape(-1)  # (120,)
    sel = np.zeros((len(cols), MP_POINTS * 3), np.float32)
    sel[np.arange(len(cols)), cols] = 1.0
    return sel


def mouth_points(lm3d: np.ndarray | torch.Tensor):
    """(..., 478, 3) MediaPipe landmarks -> (..., 40, 3) mouth points (MOUTH order)."""
    return lm3d[..., list(MOUTH), :]


class _NormalEquations:
    """Running X^T X, X^T Y and target moments (float64) for Y = lm3d_mouth - B_id alpha on
    X = [beta, 1] over valid frames."""

    def __init__(self):
        self.frames = 0
        self.xtx = self.xty = self.ysum = None
        self.yy = 0.0

    def add(self, sample: Mapping[str, np.ndarray]) -> None:
        valid = np.asarray(sample["valid"], bool)  # (F,)
        if not valid.any():
            return
        beta = np.asarray(sample["exp"], np.float64)[valid]  # (V, D_exp)
        lm3d = np.asarray(sample["lm3d"], np.float64)[valid]  # (V, 478, 3)
        ident = np.asarray(sample["id"], np.float64).reshape(MP_POINTS, 3)  # (478, 3)
        y = (mouth_points(lm3d) - mouth_points(ident)).reshape(len(beta), -1)  # (V, 3M)
        x = np.concatenate([beta, np.ones((len(beta), 1))], 1)  # (V, D_exp + 1)
        if self.xtx is None:
            self.xtx = np.zeros((x.shape[1], x.shape[1]))
            self.xty = np.zeros((x.shape[1], y.shape[1]))
            self.ysum = np.zeros(y.shape[1])
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.ysum += y.sum(0)
        self.yy += float((y * y).sum())
        self.frames += len(beta)

    def solve(self, ridge: float) -> np.ndarray:
        """(D_exp + 1, 3M) coefficients; the intercept (last row) is not penalised."""
        d = self.xtx.shape[0] - 1
        lam = ridge * max(float(np.trace(self.xtx[:d, :d])) / max(d, 1), 1e-12)
        a = self.xtx + np.diag(np.r_[np.full(d, lam), 0.0])
        return np.linalg.solve(a, self.xty)

    def report(self, coef: np.ndarray) -> FitReport:
        n, k = self.frames, self.xty.shape[1]
        # sum |Y - X W|^2 = sum Y^2 - 2 tr(W^T X^T Y) + tr(W^T X^T X W), exactly, in one pass
        ss_res = (
            self.yy - 2.0 * float((coef * self.xty).sum()) + float((coef * (self.xtx @ coef)).sum())
        )
        ss_tot = self.yy - float((self.ysum**2).sum()) / n
        ss_res = max(ss_res, 0.0)
        return FitReport(
            frames=n,
            r2=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            rmse=float(np.sqrt(ss_res / (n * k))),
            std=float(np.sqrt(max(ss_tot, 0.0) / (n * k))),
        )


from_bfm = FaceModel.from_bfm
fit_mediapipe = FaceModel.fit_mediapipe
