"""The lip expert: a SyncNet-style mouth/audio sync discriminator (paper section 3.2, eqs.
10-11; Prajwal et al. 2020's expert; DESIGN.md section 1).

Two encoders embed a window of W frames (W = 5, 0.2 s at 25 fps, as Wav2Lip's expert):
mouth points (N, W, M, 3) from the face model of eq. 1 (model/nets/face_model.py) -> v (N, E) and
audio features (N, W, D_a) -> a (N, E). Both end in a ReLU and are scaled to unit length, so

    P_sync = v . a / max(|v| |a|, eps)  in [0, 1],  clipped to [eps, 1]     (eq. 10)
    L_sync = -log P_sync                                                    (eq. 11)

The expert is pre-trained on in-sync vs time-shifted pairs (`make_pairs`) with binary
cross-entropy (`expert_loss`), then frozen; the Exp transformer's trainer maps its predicted
beta to mouth points and applies `sync_loss` over all sliding windows (`windows`).

Mouth normalisation (inside `embed_mouth`, see `normalize_mouth`): each window's mean mouth
is subtracted and the result divided by that mean mouth's size (RMS distance of its points
from their centroid), times MOTION_GAIN. Why: with the linear model of eq. 1 the identity part
S_bar + B_id alpha is the same in every frame of a window, so subtracting the window mean
removes it exactly and the expert sees only B_exp (beta_t - mean beta), i.e. the mouth's
motion, whatever the identity; dividing by the mouth size makes it unit-free (MediaPipe cm
and BFM units alike) and independent of face scale. The price is the absolute opening level
inside one window, which sync discrimination needs little: a shifted audio window disagrees
with the motion pattern, not with the mean shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from fd2talk.model.configs import LIP_EXPERT_PRESETS as PRESETS  # noqa: F401  (re-exported)
from fd2talk.model.configs import LIP_WINDOW as WINDOW
from fd2talk.model.configs import LipExpertConfig

MIN_SHIFT = 3  # default smallest |audio shift| (frames, 120 ms) of an off-sync pair
MOTION_GAIN = 10.0  # mouth motion / mouth size is ~0.05-0.2 in speech: bring it near 1
SIZE_FLOOR = 1e-6  # smallest mouth size divided by (a degenerate all-equal window)


class _ConvBlock(nn.Module):
    """Pre-LayerNorm residual temporal convolution: x + conv(gelu(ln(x))), (N, W, C)."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, W, C)
        h = F.gelu(self.norm(x)).transpose(1, 2)  # (N, C, W)
        return x + self.conv(h).transpose(1, 2)  # (N, W, C)


class _Encoder(nn.Module):
    """(N, W, D_in) -> (N, E) unit vectors with non-negative entries."""

    def __init__(self, in_dim: int, config: LipExpertConfig):
        super().__init__()
        self.inp = nn.Linear(in_dim, config.width)
        self.blocks = nn.ModuleList(
            _ConvBlock(config.width, config.kernel) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.width)
        self.out = nn.Linear(config.window * config.width, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, W, D_in)
        h = self.inp(x)  # (N, W, C)
        for block in self.blocks:
            h = block(h)  # (N, W, C)
        h = F.gelu(self.norm(h)).flatten(1)  # (N, W * C)
        e = F.relu(self.out(h))  # (N, E), SyncNet's embeddings are post-ReLU
        return F.normalize(e, dim=-1, eps=1e-8)  # (N, E)


class LipExpert(nn.Module):
    """forward(mouth (N, W, M, 3), audio (N, W, D_a)) -> P_sync (N,) in [eps, 1]."""

    def __init__(
        self, config: LipExpertConfig = LipExpertConfig(), n_points: int = 20, audio_dim: int = 80
    ):
        super().__init__()
        self.config = config
        self.n_points = n_points
        self.audio_dim = audio_dim
        self.mouth_encoder = _Encoder(3 * n_points, config)
        self.audio_encoder = _Encoder(audio_dim, config)

    @property
    def window(self) -> int:
        return self.config.window

    def _check(self, x: torch.Tensor, trailing: tuple[int, ...], what: str) -> None:
        want = (self.config.window, *trailing)
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"{what} must be (N, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )

    def embed_mouth(self, mouth: torch.Tensor) -> torch.Tensor:
        """(N, W, M, 3) mouth points (any units) -> (N, E) unit vectors."""
        self._check(mouth, (self.n_points, 3), "mouth")
        return self.mouth_encoder(normalize_mouth(mouth).flatten(2))  # (N, E)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, W, D_a) normalised audio features -> (N, E) unit vectors."""
        self._check(audio, (self.audio_dim,), "audio")
        return self.audio_encoder(audio)  # (N, E)

    def forward(self, mouth: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        v = self.embed_mouth(mouth)  # (N, E)
        a = self.embed_audio(audio.to(v.dtype))  # (N, E)
        return (v * a).sum(-1).clamp(self.config.eps, 1.0)  # (N,) eq. 10


def normalize_mouth(mouth: torch.Tensor) -> torch.Tensor:
    """(N, W, M, 3) -> (N, W, M, 3): (mouth - window mean) / mean mouth size * MOTION_GAIN
    (see the module docstring for why)."""
    ref = mouth.mean(1, keepdim=True)  # (N, 1, M, 3) the window's mean mouth
    centred = ref - ref.mean(2, keepdim=True)  # (N, 1, M, 3)
    size = centred.square().sum(-1).mean(-1).sqrt().clamp_min(SIZE_FLOOR)  # (N, 1)
    return (mouth - ref) * (MOTION_GAIN / size[..., None, None])  # (N, W, M, 3)


def sync_loss(p_sync: torch.Tensor) -> torch.Tensor:
    """L_sync = -log P_sync, averaged (eq. 11); float32 even under autocast."""
    return -torch.log(p_sync.float()).mean()


def expert_loss(p_sync: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of P_sync against label (1 in-sync, 0 off-sync): pre-training.

    The same value as F.binary_cross_entropy (logs clamped at -100), written out because that
    function refuses to run under CUDA autocast.
    """
    p, y = p_sync.float(), label.float()
    log_p = torch.log(p).clamp_min(-100.0)
    log_q = torch.log1p(-p).clamp_min(-100.0)  # P_sync may be exactly 1
    return -(y * log_p + (1 - y) * log_q).mean()


def accuracy(p_sync: torch.Tensor, label: torch.Tensor, threshold: float = 0.5) -> float:
    """Share of pairs classified right by P_sync > threshold."""
    return ((p_sync > threshold) == label.bool()).float().mean().item()


def windows(x: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """(N, F, ...) -> (N, F - W + 1, W, ...) sliding windows with stride 1 (a view)."""
    if x.shape[1] < window:
        raise ValueError(f"{x.shape[1]} frames are fewer than the window of {window}")
    return x.unfold(1, window, 1).movedim(-1, 2)


def make_pairs(
    mouth: torch.Tensor,
    audio: torch.Tensor,
    valid: torch.Tensor,
    window: int = WINDOW,
    min_shift: int = MIN_SHIFT,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One in-sync and one off-sync pair per sequence, for pre-training the expert.

    mouth (N, F, M, 3), audio (N, F, D_a), valid (N, F) bool ->
    mouth_w (2N, W, M, 3), audio_w (2N, W, D_a), label (2N,) float32. Rows 0..N-1 are the
    in-sync pairs (label 1: mouth and audio from the same frames s..s+W-1), rows N..2N-1 the
    off-sync ones (label 0: the same mouth window, audio from s'..s'+W-1 with
    |s' - s| >= min_shift, inside the sequence). Windows lie on valid frames where possible:
    first both windows all-valid, else only the mouth window, else anywhere. Start s is
    uniform over the starts that have a partner, s' uniform over the partners of s; all
    randomness from `generator` (CPU), two draws per sequence.
    """
    n, f = valid.shape
    n_starts = f - window + 1
    if n_starts - 1 < min_shift or min_shift < 1:
        raise ValueError(
            f"{f} frames leave no audio shift of at least {min_shift} frames for "
            f"a {window}-frame window (need F >= W + min_shift, min_shift >= 1)"
        )
    ok = windows(valid.bool(), window).all(-1).cpu()  # (N, S) window fully valid
    idx = torch.arange(n_starts)
    far = (idx[:, None] - idx[None]).abs() >= min_shift  # (S, S)
    tiers = torch.stack(
        [
            ok[:, :, None] & ok[:, None, :] & far,  # both windows valid
            ok[:, :, None] & far,  # the mouth window valid
            far.expand(n, -1, -1),
        ]
    )  # anywhere: (3, N, S, S)
    tier = tiers.flatten(2).any(-1).int().argmax(0)  # (N,) first tier with a pair
    allowed = tiers[tier, torch.arange(n)]  # (N, S, S)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)  # two draws per sequence
    starts = _pick(allowed.any(2), u[:, 0])  # (N,) uniform over starts with a partner
    shifted = _pick(allowed[torch.arange(n), starts], u[:, 1])  # (N,) uniform partner
    if audio.device != mouth.device:
        raise ValueError(f"mouth is on {mouth.device}, audio on {audio.device}")
    rows_n = torch.arange(n, device=mouth.device)
    starts, shifted = starts.to(mouth.device), shifted.to(mouth.device)
    mouth_w = windows(mouth, window)[rows_n, starts]  # (N, W, M, 3)
    aw = windows(audio, window)  # (N, S, W, D_a)
    audio_pos = aw[rows_n, starts]  # (N, W, D_a)
    audio_neg = aw[rows_n, shifted]  # (N, W, D_a)
    label = torch.cat([torch.ones(n), torch.zeros(n)]).to(mouth.device)  # (2N,)
    return (
        torch.cat([mouth_w, mouth_w]).contiguous(),
        torch.cat([audio_pos, audio_neg]).contiguous(),
        label,
    )


def _pick(mask: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(N, S) bool with a True in every row, u (N,) uniform in [0, 1) -> (N,) index of the
    floor(u * count)-th True of each row (a uniform choice among them)."""
    count = mask.sum(1)  # (N,)
    k = (u * count).long().clamp_max(count - 1)  # (N,)
    return (mask.cumsum(1) > k[:, None]).int().argmax(1)  # first position past k Trues
