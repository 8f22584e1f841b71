"""Stage-1 motion network: the Exp / Pose Diffusion Transformer (paper section 3.2, Fig. 2, eq. 4).

One class serves both θ_exp (predicts β, D = 64 deep3d / 52 blendshapes) and θ_pose (predicts
p, D = 6). It is a sequence-to-sequence transformer over a window of F frames that predicts the
clean signal x0 from the noisy x_t; the diffusion module (`fd2talk.model.diffusion`) does all
noising, losses and sampling (DESIGN.md section 1; STYLE.md rule 4).

    x_t (N, F, D) ──in_proj──► tokens (N, F, W) + frame positions [+ time embedding, see below]
    t (N,) ──sinusoid──► MLP ──► e_t (N, D_τ)
    c = [e_t ; audio] per frame (N, F, D_τ + D_a) ──linear──► τ(c) (N, F, D_τ) + frame positions
    L × block (pre-LayerNorm, residual):
        tokens += SelfAttention(LN(tokens))                       all frames see all frames
        tokens += CrossAttention(LN(tokens), τ(c), M)             Q from motion, K/V from τ(c)
        tokens += FeedForward(LN(tokens))
    LN ──out_proj (zero-init)──► x0_hat (N, F, D)

Alignment mask M (eq. 4): frame i may attend to condition frame j only when |i - j| <= k (k = 3
in the paper); `k=None` removes the mask. Positions are sinusoidal and computed for the F at
hand, so any window length works.

Departures from the paper, all small and stated here:
- The time embedding is ALSO added to the motion tokens (DiT-style), not only carried in c;
  set `MotionDiTConfig.time_in_tokens=False` for the paper's "t only through c".
- τ(c) gets the same sinusoidal frame positions as the tokens, so cross-attention can tell the
  audio offset j - i inside the mask window (the paper does not say how positions enter).
- The one linear layer on c = [e_t ; audio] is stored as one weight (D_τ, D_τ + D_a) but applied
  as W_t e_t + W_a audio, so the per-sample e_t is projected once instead of once per frame
  (exactly the same function, fewer FLOPs).

Speed (bench/motion.py): attention runs through `F.scaled_dot_product_attention`; q/k/v of the
self-attention come from one fused linear and k/v of the cross-attention from another, so a
training step is a short list of large matmuls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)
from torch import nn

from fd2talk.model.configs import MOTION_PRESETS as PRESETS  # noqa: F401  (re-exported)
from fd2talk.model.configs import MotionDiTConfig

TIME_FREQ_DIM = 256  # width of the sinusoidal timestep features before the time MLP (as DiT)
MAX_PERIOD = 10_000.0  # longest period of the sinusoidal time and frame encodings


def alignment_mask(frames: int, k: int | None, device: torch.device | str | None = None):
    """Paper eq. 4: (F, F) bool, True where query frame i may attend to key frame j (|i-j| <= k).

    Returns None for k=None (attend everywhere), which SDPA treats as no mask.
    """
    if k is None:
        return None
    idx = torch.arange(frames, device=device)  # (F,)
    return (idx[:, None] - idx[None, :]).abs() <= k  # (F, F)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal features of `positions` (any shape S) -> (*S, dim), float32.

    First half cosines, second half sines, frequencies from 1 down to 1/MAX_PERIOD (DiT's
    timestep embedding; the same function encodes frame indices).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(MAX_PERIOD)
        * torch.arange(half, dtype=torch.float32, device=positions.device)
        / half
    )  # (half,)
    args = positions.to(torch.float32)[..., None] * freqs  # (*S, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (*S, 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb  # (*S, dim)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, F, W) -> (N, H, F, W/H)."""
    n, f, w = x.shape
    return x.view(n, f, heads, w // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(N, H, F, W/H) -> (N, F, W)."""
    n, h, f, d = x.shape
    return x.transpose(1, 2).reshape(n, f, h * d)


class SelfAttention(nn.Module):
    """Multi-head self-attention over frames: one fused qkv linear + SDPA + output linear."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, F, W) -> (N, F, W)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (N, F, W)
        a = F.scaled_dot_product_attention(
            _heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads)
        )  # (N, H, F, W/H)
        return self.out(_merge(a))  # (N, F, W)


class CrossAttention(nn.Module):
    """Cross-attention of the paper's DiT: queries from the motion tokens, keys/values from τ(c).

    Callable alone: forward(x (N, F, W), ctx (N, F_c, D_ctx), mask (F, F_c) bool or None)
    -> (N, F, W); with `alignment_mask(F, k)` the output at frame i depends on ctx only at
    frames j with |i - j| <= k.
    """

    def __init__(self, width: int, ctx_dim: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(ctx_dim, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (N, F, W), ctx (N, F_c, D_ctx), mask (F, F_c) bool (True = may attend) -> (N, F, W)."""
        q = _heads(self.q(x), self.heads)  # (N, H, F, W/H)
        k, v = self.kv(ctx).chunk(2, dim=-1)  # 2 x (N, F_c, W)
        a = F.scaled_dot_product_attention(
            q, _heads(k, self.heads), _heads(v, self.heads), attn_mask=mask
        )  # (N, H, F, W/H)
        return self.out(_merge(a))  # (N, F, W)


class FeedForward(nn.Module):
    """Linear -> GELU (exact erf form; on CPU its forward is ~4x faster than tanh's) -> Linear."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, F, W) -> (N, F, W)."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm residual block: self-attention, masked cross-attention, feed-forward."""

    def __init__(self, config: MotionDiTConfig):
        super().__init__()
        w = config.width
        self.norm1 = nn.LayerNorm(w)
        self.attn = SelfAttention(w, config.heads)
        self.norm2 = nn.LayerNorm(w)
        self.cross = CrossAttention(w, config.tau_dim, config.heads)
        self.norm3 = nn.LayerNorm(w)
        self.mlp = FeedForward(w, int(w * config.mlp_ratio))
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (N, F, W), ctx τ(c) (N, F, D_τ), mask (F, F) or None -> (N, F, W)."""
        x = x + self.drop(self.attn(self.norm1(x)))
        x = x + self.drop(self.cross(self.norm2(x), ctx, mask))
        return x + self.drop(self.mlp(self.norm3(x)))


class MotionDiT(nn.Module):
    """θ_exp / θ_pose: predicts x0_hat (N, F, D) from x_t (N, F, D), t (N,) and audio (N, F, D_a)."""

    def __init__(self, config: MotionDiTConfig, motion_dim: int, audio_dim: int):
        super().__init__()
        self.config = config
        self.motion_dim = motion_dim
        self.audio_dim = audio_dim
        w, tau = config.width, config.tau_dim
        self.in_proj = nn.Linear(motion_dim, w)
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FREQ_DIM, tau), nn.SiLU(), nn.Linear(tau, tau))
        # τ(c) = cond([e_t ; audio]); weight columns [:tau] act on e_t, [tau:] on the audio.
        self.cond = nn.Linear(tau + audio_dim, tau)
        self.time_to_tokens = nn.Linear(tau, w) if config.time_in_tokens else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(w)
        self.out_proj = nn.Linear(w, motion_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform linears with zero bias (as DiT), N(0, 0.02) time MLP, zero output."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.time_mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.out_proj.weight)  # x0_hat starts at 0 = the data mean (normalised)

    def condition(self, t: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(e_t (N, D_τ), τ(c) (N, F, D_τ)) for timesteps t (N,) and audio (N, F, D_a)."""
        tau = self.config.tau_dim
        e_t = self.time_mlp(sinusoid(t, TIME_FREQ_DIM))  # (N, D_τ)
        w, b = self.cond.weight, self.cond.bias  # (D_τ, D_τ + D_a), (D_τ,)
        ctx = F.linear(audio, w[:, tau:], b) + F.linear(e_t, w[:, :tau])[:, None]  # (N, F, D_τ)
        pos = sinusoid(torch.arange(audio.shape[1], device=audio.device), tau)  # (F, D_τ)
        return e_t, ctx + pos.to(ctx.dtype)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """x_t (N, F, D), t (N,) int64, audio (N, F, D_a) -> x0_hat (N, F, D)."""
        n, frames, _ = x_t.shape
        if audio.shape[:2] != (n, frames):
            raise ValueError(f"audio {tuple(audio.shape)} does not match x_t {tuple(x_t.shape)}")
        e_t, ctx = self.condition(t, audio)  # (N, D_τ), (N, F, D_τ)
        pos = sinusoid(torch.arange(frames, device=x_t.device), self.config.width)  # (F, W)
        h = self.in_proj(x_t) + pos.to(x_t.dtype)  # (N, F, W)
        if self.time_to_tokens is not None:
            h = h + self.time_to_tokens(e_t)[:, None]  # (N, F, W)
        mask = alignment_mask(frames, self.config.k, x_t.device)  # (F, F) or None
        for block in self.blocks:
            h = block(h, ctx, mask)  # (N, F, W)
        return self.out_proj(self.norm_out(h))  # (N, F, D)
