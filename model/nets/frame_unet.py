"""Stage-2 frame network θ_unet: the conditional Diffusion UNet (paper section 3.3, Fig. 3,
eqs. 6, 7, 16; DESIGN.md section 1).

It denoises ONE frame latent J_t (N, d, h, w) and predicts the clean latent J0_hat (x0
prediction, paper eq. 16); `fd2talk.model.diffusion` does all noising, losses and sampling
(STYLE.md rule 4). Conditions: the frame's motion [β, p] (N, D_exp + 6) and the reference
latent x = E(first frame) (N, d, h, w).

    t (N,) ──sinusoid──► MLP ──► temb (N, 4 C0)                                   (as LDM)
    [β, p] (N, D_m) ──linear──► motion tokens (N, M, D_c)       (eq. 6's "linear projection")
    x (N, d, h, w) ──flatten──► (N, h·w, d) ──linear──► + 2-D sinusoid ──► ref tokens (N, h·w, D_c)
    J_t ──conv_in──► encoder: per level, layers_per_block × [ResnetBlock2D(temb) → DualCrossAttention]
                     then Downsample2D (not after the last level)
                ──► middle: ResnetBlock2D → DualCrossAttention → ResnetBlock2D
                ──► decoder: per level, (layers_per_block + 1) × [concat skip → ResnetBlock2D →
                     DualCrossAttention] then Upsample2D
                ──► GroupNorm → SiLU → conv_out (zero-init) ──► J0_hat (N, d, h, w)

DualCrossAttention (our block, on the feature map's tokens f (N, H·W, C), pre-LayerNorm, residual):
    m1 = f  + φ1(LN(f),  motion tokens)     eq. 6: Q from J_t's features, K/V from [β, p]
    m2 = m1 + φ2(LN(m1), ref tokens)        eq. 7: Q from m1, K/V from x as a sequence + positions
`cond="concat"` (the paper's ablation, Table 2): ONE cross-attention over the concatenated
[motion tokens ; ref tokens]. Both output projections are zero-initialised, so a fresh block is
the identity and a fresh network predicts J0_hat = 0 (as `MotionDiT`).

Cost of the reference sequence: the paper flattens x itself, so φ2 keeps all h·w reference
tokens at EVERY level; at a level of H_l·W_l queries and width C_l its attention costs
4·H_l·W_l·h·w·C_l FLOPs a sample (QKᵀ and PV, forward). For the paper preset at 64×64 that is
~8.6 GFLOP per φ2 at the 64×64 level (5 blocks there), ~4.3 at 32×32, ~1.1 at 16×16, ~0.5 at
8×8: ~75 GFLOP a sample a forward from φ2 alone, about twice the convolutions. `ref_pool` > 1
average-pools x before flattening (a cost knob, NOT the paper: 2 cuts φ2's cost 4×).

Departures from / choices beyond the paper, all small:
- M = `motion_tokens` key/value tokens from [β, p] (the paper's projection size is unstated; one
  token would make φ1's softmax trivially uniform, a spatially constant bias).
- No self-attention and no feed-forward in the block: the paper names only φ1 and φ2.
- Timestep conditioning as in LDM (sinusoid → MLP added inside every ResnetBlock2D).

Building blocks are diffusers' (ResnetBlock2D, Downsample2D, Upsample2D, Attention,
Timesteps, TimestepEmbedding); diffusers is imported inside the constructors so importing this
module stays cheap (fd2talk-train's --help).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)
from torch import nn

from fd2talk.model.configs import UNET_PRESETS as PRESETS  # noqa: F401  (re-exported)
from fd2talk.model.configs import Cond, FrameUNetConfig

MAX_PERIOD = 10_000.0  # longest period of the 2-D sinusoidal reference positions


def sinusoid_2d(
    h: int, w: int, dim: int, device: torch.device | str | None = None, stride: float = 1.0
) -> torch.Tensor:
    """(h·w, dim) float32 2-D sinusoidal positions, row-major like `x.flatten(2)`.

    The first dim/2 channels encode the row y, the last dim/2 the column x, each as
    [sin(pos·f_k), cos(pos·f_k)] with f_k = MAX_PERIOD^(-k / (dim/4)), k = 0..dim/4-1 (as MAE).
    """
    quarter = dim // 4
    freqs = torch.exp(
        -math.log(MAX_PERIOD) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter
    )  # (dim/4,)

    def enc(n: int) -> torch.Tensor:
        pos = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * stride - 0.5  # (n,)
        a = pos[:, None] * freqs  # (n, dim/4); stride: cells of a coarser grid, in x's units
        return torch.cat([a.sin(), a.cos()], dim=1)  # (n, dim/2)

    ey = enc(h)[:, None].expand(h, w, dim // 2)  # (h, w, dim/2)
    ex = enc(w)[None].expand(h, w, dim // 2)  # (h, w, dim/2)
    return torch.cat([ey, ex], dim=2).reshape(h * w, dim)  # (h·w, dim)


def _cross_attention(width: int, ctx_dim: int, head_dim: int, dropout: float) -> nn.Module:
    """diffusers Attention (SDPA) with queries of `width` and keys/values from `ctx_dim`,
    output projection zero-initialised (the residual branch starts at 0)."""
    from diffusers.models.attention_processor import Attention

    attn = Attention(
        query_dim=width,
        cross_attention_dim=ctx_dim,
        heads=width // head_dim,
        dim_head=head_dim,
        dropout=dropout,
        bias=False,
        out_bias=True,
    )
    nn.init.zeros_(attn.to_out[0].weight)
    nn.init.zeros_(attn.to_out[0].bias)
    return attn


class DualCrossAttention(nn.Module):
    """φ1 (K/V: motion tokens) then φ2 (Q: φ1's output, K/V: reference tokens), paper eqs. 6-7;
    or, with cond="concat", one cross-attention `phi` over [motion tokens ; ref tokens]."""

    def __init__(self, width: int, config: FrameUNetConfig):
        super().__init__()
        self.cond = config.cond
        d_c, hd, p = config.cond_dim, config.head_dim, config.dropout
        self.norm1 = nn.LayerNorm(width)
        if config.cond == Cond.dual:
            self.phi1 = _cross_attention(width, d_c, hd, p)
            self.norm2 = nn.LayerNorm(width)
            self.phi2 = _cross_attention(width, d_c, hd, p)
        else:
            self.phi = _cross_attention(width, d_c, hd, p)

    def reference_kv(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """φ2's keys and values (N_ref, heads, S, head_dim) for ref tokens (N_ref, S, D_c): they
        depend only on the reference, so a video computes them once (None for cond="concat")."""
        if self.cond != Cond.dual:
            return None
        a = self.phi2
        n, s, _ = ref.shape
        k = a.to_k(ref).view(n, s, a.heads, -1).transpose(1, 2)  # (N_ref, heads, S, hd)
        v = a.to_v(ref).view(n, s, a.heads, -1).transpose(1, 2)
        return k, v

    def _phi2_cached(self, q: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """φ2 with precomputed keys/values: what diffusers' AttnProcessor2_0 computes."""
        a = self.phi2
        n, length, _ = q.shape
        k, v = (t.expand(n, -1, -1, -1) for t in kv)  # (N, heads, S, hd)
        q = a.to_q(q).view(n, length, a.heads, -1).transpose(1, 2)  # (N, heads, HW, hd)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, -1)
        return a.to_out[1](a.to_out[0](o))  # (N, HW, C)

    def forward(
        self,
        f: torch.Tensor,
        motion: torch.Tensor,
        ref: torch.Tensor | None,
        ref_hw: tuple[int, int] | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """f (N, C, H, W), motion tokens (N, M, D_c), ref tokens (N, S, D_c) -> (N, C, H, W).
        ref_hw: the reference token grid (h', w'); given, phi2's queries carry 2-D positions in
        that grid's units, so a location can look up the same place in the reference.
        kv: φ2's keys/values from `reference_kv` (then ref is not used)."""
        n, c, h, w = f.shape
        x = f.flatten(2).transpose(1, 2)  # (N, H·W, C)
        if self.cond == Cond.dual:
            x = x + self.phi1(self.norm1(x), encoder_hidden_states=motion)  # m1, eq. 6
            q = self.norm2(x)  # (N, H·W, C)
            if ref_hw is not None and c % 4 == 0:
                q = q + sinusoid_2d(h, w, c, f.device, stride=ref_hw[0] / h).to(q.dtype)
            if kv is not None:
                x = x + self._phi2_cached(q, kv)  # m2, eq. 7
            else:
                x = x + self.phi2(q, encoder_hidden_states=ref)  # m2, eq. 7
        else:
            ctx = torch.cat([motion, ref], dim=1)  # (N, M + S, D_c)
            x = x + self.phi(self.norm1(x), encoder_hidden_states=ctx)
        return x.transpose(1, 2).reshape(n, c, h, w)  # (N, C, H, W)


class FrameUNet(nn.Module):
    """θ_unet: J0_hat (N, d, h, w) from J_t (N, d, h, w), t (N,), [β, p] (N, D_m), x (N, d, h, w)."""

    def __init__(self, config: FrameUNetConfig, motion_dim: int):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

        self.config = config
        self.motion_dim = motion_dim  # D_exp + 6
        ch, d, d_c = config.channels, config.latent_channels, config.cond_dim
        t_dim = config.time_dim or 4 * ch[0]
        levels, layers = len(ch), config.layers_per_block

        def resnet(c_in: int, c_out: int) -> nn.Module:
            return ResnetBlock2D(
                in_channels=c_in,
                out_channels=c_out,
                temb_channels=t_dim,
                groups=config.norm_groups,
                dropout=config.dropout,
            )

        def attention(level: int) -> nn.Module:
            has = config.has_attention(level)
            return DualCrossAttention(ch[level], config) if has else nn.Identity()

        self.time_proj = Timesteps(ch[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(ch[0], t_dim)
        self.motion_proj = nn.Linear(motion_dim, config.motion_tokens * d_c)
        self.ref_proj = nn.Linear(d, d_c)
        self.conv_in = nn.Conv2d(d * (2 if config.ref_input else 1), ch[0], 3, padding=1)

        # encoder; skip_ch records the width of every feature the decoder concatenates back
        skip_ch = [ch[0]]
        self.down_resnets, self.down_attns = nn.ModuleList(), nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        c_in = ch[0]
        for i in range(levels):
            for _ in range(layers):
                self.down_resnets.append(resnet(c_in, ch[i]))
                self.down_attns.append(attention(i))
                c_in = ch[i]
                skip_ch.append(c_in)
            if i < levels - 1:
                self.downsamplers.append(Downsample2D(c_in, use_conv=True, padding=1))
                skip_ch.append(c_in)

        self.mid_resnet1 = resnet(c_in, c_in)
        has_mid = config.mid_attention
        self.mid_attn = DualCrossAttention(c_in, config) if has_mid else nn.Identity()
        self.mid_resnet2 = resnet(c_in, c_in)

        self.up_resnets, self.up_attns = nn.ModuleList(), nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(levels)):
            for _ in range(layers + 1):
                self.up_resnets.append(resnet(c_in + skip_ch.pop(), ch[i]))
                self.up_attns.append(attention(i))
                c_in = ch[i]
            if i > 0:
                self.upsamplers.append(Upsample2D(c_in, use_conv=True))

        self.norm_out = nn.GroupNorm(config.norm_groups, ch[0])
        self.conv_out = nn.Conv2d(ch[0], d, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # J0_hat starts at 0 (as MotionDiT)
        nn.init.zeros_(self.conv_out.bias)

    def condition(
        self, motion: torch.Tensor, ref: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(motion tokens (N, M, D_c), ref tokens (N_ref, h'·w', D_c)) for [β, p] (N, D_m) and
        x (N_ref, d, h, w); h' = h / ref_pool."""
        n, d_c = motion.shape[0], self.config.cond_dim
        m = self.motion_proj(motion).view(n, self.config.motion_tokens, d_c)  # (N, M, D_c)
        if self.config.ref_pool > 1:
            ref = F.avg_pool2d(ref, self.config.ref_pool)  # (N_ref, d, h', w')
        _, _, h, w = ref.shape
        r = self.ref_proj(ref.flatten(2).transpose(1, 2))  # (N_ref, h'·w', D_c)
        r = r + sinusoid_2d(h, w, d_c, ref.device).to(r.dtype)  # (N_ref, h'·w', D_c)
        return m, r

    def reference_cache(self, ref: torch.Tensor) -> dict:
        """Everything the network computes from the reference x (1, d, h, w) alone: its tokens
        and every φ2's keys and values. Pass it as `forward(..., cache=)`: a video's frames and
        steps then skip that work (bench/generate.py measures the gain)."""
        _, r = self.condition(
            torch.zeros(1, self.motion_dim, device=ref.device, dtype=ref.dtype), ref
        )
        blocks = [b for b in self.modules() if isinstance(b, DualCrossAttention)]
        return {"ref": ref, "tokens": r, "kv": {b: b.reference_kv(r) for b in blocks}}

    def forward(
        self,
        j_t: torch.Tensor,
        t: torch.Tensor,
        motion: torch.Tensor,
        ref: torch.Tensor,
        cache: dict | None = None,
    ) -> torch.Tensor:
        """j_t (N, d, h, w), t (N,) int64, motion [β, p] (N, D_m), ref x (N or 1, d, h, w)
        -> J0_hat (N, d, h, w). h, w divisible by config.factor; a batch-1 ref is shared.
        cache: `reference_cache(ref)` (ref must be that batch-1 reference)."""
        n, _, h, w = j_t.shape
        cfg = self.config
        if h % cfg.factor or w % cfg.factor:
            raise ValueError(f"latent size {h}x{w} is not divisible by the UNet's {cfg.factor}")
        if ref.shape[0] not in (1, n) or ref.shape[1:] != j_t.shape[1:]:
            raise ValueError(f"ref {tuple(ref.shape)} does not match j_t {tuple(j_t.shape)}")
        if motion.shape != (n, self.motion_dim):
            raise ValueError(f"motion {tuple(motion.shape)}, expected ({n}, {self.motion_dim})")
        if (h // cfg.ref_pool) * cfg.ref_pool != h or (w // cfg.ref_pool) * cfg.ref_pool != w:
            raise ValueError(f"latent size {h}x{w} is not divisible by ref_pool {cfg.ref_pool}")

        temb = self.time_embed(self.time_proj(t).to(j_t.dtype))  # (N, T_d)
        if cache is not None:
            if cache["ref"] is not ref:
                raise ValueError("cache was made for another reference (reference_cache(ref))")
            m = self.motion_proj(motion).view(n, cfg.motion_tokens, cfg.cond_dim)  # (N, M, D_c)
            r = cache["tokens"]  # (1, S, D_c)
        else:
            m, r = self.condition(motion, ref)  # (N, M, D_c), (N or 1, S, D_c)
        grid = (h // cfg.ref_pool, w // cfg.ref_pool) if cfg.query_positions else None  # x's grid
        r = r.expand(n, -1, -1)  # (N, S, D_c)
        kv = cache["kv"] if cache is not None else {}

        if cfg.ref_input:  # [J_t ; x] (N, 2d, h, w)
            j_t = torch.cat([j_t, ref.expand(n, -1, -1, -1).to(j_t.dtype)], 1)
        x = self.conv_in(j_t)  # (N, C_0, h, w)
        skips = [x]
        layers, levels = cfg.layers_per_block, len(cfg.channels)
        for i in range(levels):
            for k in range(i * layers, (i + 1) * layers):
                x = self.down_resnets[k](x, temb)  # (N, C_i, h/2^i, w/2^i)
                x = self._attend(self.down_attns[k], x, m, r, grid, kv)
                skips.append(x)
            if i < levels - 1:
                x = self.downsamplers[i](x)  # (N, C_i, h/2^(i+1), w/2^(i+1))
                skips.append(x)

        x = self.mid_resnet1(x, temb)  # (N, C_L, h/2^(L-1), w/2^(L-1))
        x = self._attend(self.mid_attn, x, m, r, grid, kv)
        x = self.mid_resnet2(x, temb)

        k = 0
        for j, i in enumerate(reversed(range(levels))):
            for _ in range(layers + 1):
                x = torch.cat([x, skips.pop()], dim=1)  # (N, C + C_skip, ., .)
                x = self.up_resnets[k](x, temb)  # (N, C_i, h/2^i, w/2^i)
                x = self._attend(self.up_attns[k], x, m, r, grid, kv)
                k += 1
            if i > 0:
                x = self.upsamplers[j](x)  # (N, C_i, h/2^(i-1), w/2^(i-1))

        return self.conv_out(F.silu(self.norm_out(x)))  # (N, d, h, w)

    @staticmethod
    def _attend(
        block: nn.Module,
        x: torch.Tensor,
        m: torch.Tensor,
        r: torch.Tensor,
        grid: tuple[int, int] | None,
        kv: dict,
    ):
        return x if isinstance(block, nn.Identity) else block(x, m, r, grid, kv.get(block))

    def predictor(
        self, motion: torch.Tensor, ref: torch.Tensor
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`predict(j_t, t) -> J0_hat` with the condition bound, for Diffusion.loss / .sample."""
        return lambda j_t, t: self(j_t, t, motion, ref)
