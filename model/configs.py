"""Every configuration dataclass and presets dict, in one module without torch: the command
lines read their options' defaults and preset choices from here (`fd2talk-train --help` stays
instant, and a default cannot differ between the CLI and the library).

- Networks: `MotionDiTConfig` (Exp/Pose Transformers), `LipExpertConfig`, `FrameUNetConfig`,
  `AutoencoderConfig`, each with its presets dict (`tiny` for tests and CPU smoke runs,
  `paper` for the published settings).
- Training: `RunConfig` (what every `fd2talk-train` command shares) and one subclass per
  command. The modules that use them re-export them (`motion_dit.PRESETS`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

from fd2talk.core.schema import CROP_SIZE

LIP_WINDOW = 5  # frames per lip-expert window (0.2 s at 25 fps, Wav2Lip's SyncNet)


class Cond(StrEnum):
    """How the frame UNet takes its conditions."""

    dual = "dual"  # phi1 (reference) then phi2 (motion): the paper
    concat = "concat"  # one attention over both, concatenated: the paper's ablation


class RefFrame(StrEnum):
    """Which frame of a training clip is the reference."""

    first = "first"  # the clip's first valid frame: the paper
    random = "random"  # any valid frame: many (reference, target) pairs from few clips


DOWN_BLOCK = "DownEncoderBlock2D"  # every autoencoder level; all but the last halve H and W
UP_BLOCK = "UpDecoderBlock2D"


# ---- networks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionDiTConfig:
    """Architecture of one motion transformer (θ_exp or θ_pose)."""

    width: int = 256  # W: token width
    layers: int = 6  # L: number of blocks (the paper: 6)
    heads: int = 8  # attention heads in both attentions (W % heads == 0)
    tau_dim: int = 256  # D_τ: width of the condition τ(c) and of the time embedding
    mlp_ratio: float = 4.0  # feed-forward hidden width = mlp_ratio * W
    k: int | None = 3  # alignment mask half-width (paper: 3); None = no mask
    dropout: float = 0.0  # dropout on every residual branch (training only)
    time_in_tokens: bool = True  # also add the time embedding to the motion tokens (see above)


MOTION_PRESETS: dict[str, MotionDiTConfig] = {
    "tiny": MotionDiTConfig(width=64, layers=2, heads=4, tau_dim=64),
    "paper": MotionDiTConfig(),
}


@dataclass(frozen=True)
class LipExpertConfig:
    window: int = LIP_WINDOW  # W, frames per window
    width: int = 128  # channels of both encoders
    embed_dim: int = 128  # E
    layers: int = 2  # residual temporal-conv blocks per encoder
    kernel: int = 3  # temporal kernel (frames)
    eps: float = 1e-4  # P_sync lower clip (eq. 10's epsilon; keeps -log finite)


# The paper gives no expert sizes: "paper" is a SyncNet-like capacity for 25 fps coefficients.
LIP_EXPERT_PRESETS: dict[str, LipExpertConfig] = {
    "tiny": LipExpertConfig(width=32, embed_dim=32, layers=1),
    "paper": LipExpertConfig(width=256, embed_dim=256, layers=3),
}


@dataclass(frozen=True)
class FrameUNetConfig:
    """Architecture of θ_unet. Level i runs at (h, w) / 2^i; the latent size must be divisible
    by 2^(levels - 1)."""

    latent_channels: int = 3  # d: VQ-f4 latent channels (paper: d = 3)
    channels: tuple[int, ...] = (128, 256, 256, 512)  # C_i: width of level i
    layers_per_block: int = 2  # ResnetBlock2D (+ attention) per encoder level; decoder: +1
    head_dim: int = 32  # attention heads at a level = C_i // head_dim (LDM's num_head_channels)
    cond_dim: int = 256  # D_c: width of the motion tokens and the reference tokens
    motion_tokens: int = 8  # M: key/value tokens made from one frame's [β, p]
    cond: str = Cond.dual.value  # a Cond: dual: φ1 then φ2; concat: one attention (ablation)
    attention_levels: tuple[int, ...] | None = None  # levels with attention; None = all (paper)
    mid_attention: bool = True  # attention in the middle block too
    ref_pool: int = 1  # average-pool x by this before flattening (1 = paper; see docstring)
    query_positions: bool = True  # phi2's queries get the same 2-D positions as x (see below)
    # also concatenate x to J_t at the input (not the paper, which injects x through φ2 only):
    # a direct path from each reference location to the same output location
    ref_input: bool = False
    norm_groups: int = 32  # GroupNorm groups in the ResNet blocks (divides every C_i)
    time_dim: int | None = None  # timestep embedding width; None = 4 * C_0 (as LDM)
    dropout: float = 0.0  # in ResNet blocks and attention outputs (training only)

    def __post_init__(self) -> None:
        # JSON round-trips turn tuples into lists: store tuples so configs compare equal
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.attention_levels is not None:
            object.__setattr__(self, "attention_levels", tuple(self.attention_levels))
        if not self.channels:
            raise ValueError("channels must name at least one level")
        for c in self.channels:
            if c % self.norm_groups or c % self.head_dim:
                raise ValueError(
                    f"every channel count must be divisible by norm_groups {self.norm_groups} "
                    f"and head_dim {self.head_dim}, got {self.channels}"
                )
        if self.cond not in set(Cond):
            raise ValueError(f"cond must be one of {', '.join(Cond)}, got {self.cond!r}")
        if self.motion_tokens < 1 or self.layers_per_block < 1 or self.ref_pool < 1:
            raise ValueError("motion_tokens, layers_per_block and ref_pool must be >= 1")
        if self.cond_dim % 4:
            raise ValueError(f"cond_dim must be divisible by 4 (2-D sinusoid), got {self.cond_dim}")
        bad = [i for i in self.attention_levels or () if not 0 <= i < len(self.channels)]
        if bad:
            raise ValueError(f"attention_levels {bad} outside 0..{len(self.channels) - 1}")

    @property
    def factor(self) -> int:
        """Total downsampling of the UNet: latent sizes must be divisible by this."""
        return 2 ** (len(self.channels) - 1)

    def has_attention(self, level: int) -> bool:
        return self.attention_levels is None or level in self.attention_levels

    @classmethod
    def from_dict(cls, d: dict) -> FrameUNetConfig:
        """Inverse of dataclasses.asdict (e.g. from a checkpoint's config.json)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


UNET_PRESETS: dict[str, FrameUNetConfig] = {
    # ~0.77 M parameters; 2 levels (latent sizes divisible by 2), fast on CPU at 16x16-32x32
    "tiny": FrameUNetConfig(
        channels=(32, 64),
        layers_per_block=1,
        head_dim=16,
        cond_dim=32,
        motion_tokens=4,
        norm_groups=8,
    ),
    # 64x64 latents (VQ-f4 of 256x256 frames), batch 32 on a GPU
    "paper": FrameUNetConfig(),
}


@dataclass(frozen=True)
class AutoencoderConfig:
    """diffusers VQModel settings (defaults: LDM's VQ-f4, 3 levels -> f = 4, d = 3)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512)  # one encoder/decoder level each
    layers_per_block: int = 2  # resnets per encoder level (the decoder has one more)
    latent_channels: int = 3  # d
    num_vq_embeddings: int = 8192  # codebook size
    vq_embed_dim: int | None = None  # codebook vector width; None = latent_channels
    norm_num_groups: int = 32  # GroupNorm groups (divides every entry of block_out_channels)
    act_fn: str = "silu"
    mid_block_add_attention: bool = True  # self-attention in the encoder's/decoder's mid block
    sample_size: int = 256  # image size the weights were trained at (informational)

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        if not self.block_out_channels:
            raise ValueError("block_out_channels must not be empty")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"block_out_channels {bad} not divisible by norm_num_groups {self.norm_num_groups}"
            )

    @property
    def factor(self) -> int:
        """Spatial downsampling f: every level but the last halves H and W."""
        return 2 ** (len(self.block_out_channels) - 1)

    def vq_kwargs(self) -> dict:
        """Keyword arguments of `diffusers.VQModel` for this config."""
        levels = len(self.block_out_channels)
        return dict(
            in_channels=3,
            out_channels=3,
            down_block_types=(DOWN_BLOCK,) * levels,
            up_block_types=(UP_BLOCK,) * levels,
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            act_fn=self.act_fn,
            latent_channels=self.latent_channels,
            sample_size=self.sample_size,
            num_vq_embeddings=self.num_vq_embeddings,
            norm_num_groups=self.norm_num_groups,
            vq_embed_dim=self.vq_embed_dim,
            norm_type="group",
            mid_block_add_attention=self.mid_block_add_attention,
        )

    @classmethod
    def from_dict(cls, values: dict) -> AutoencoderConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


AUTOENCODER_PRESETS: dict[str, AutoencoderConfig] = {
    # CPU smoke runs and tests: a train step (2 images at 256x256) in well under a second
    "tiny": AutoencoderConfig(
        block_out_channels=(8, 16, 32),
        layers_per_block=1,
        num_vq_embeddings=512,
        norm_num_groups=4,
        mid_block_add_attention=False,
    ),
    # the offline backend's from-scratch autoencoder (DESIGN.md section 6): LDM's layout, narrower
    "small": AutoencoderConfig(
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        num_vq_embeddings=1024,
        norm_num_groups=16,
    ),
    # LDM VQ-f4 (CompVis/ldm-celebahq-256 `vqvae`): 128/256/512 channels, 2 layers, 8192 codes
    "paper": AutoencoderConfig(),
}


# ---- training ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Settings every `fd2talk-train` command shares (each command's config extends it)."""

    shards: str  # the shard folder fd2talk-prep wrote
    out: str  # the run directory
    preset: str = "tiny"
    steps: int = 2000
    batch_size: int = 32  # items per micro-batch, per process (see each command)
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation)
    val_split: str | None = "val"  # None: no validation
    val_every: int = 250
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # DataLoader worker processes
    epoch_batches: int = 500  # batches per data epoch (a re-seed point of the stream)


# settings a resumed run may change: how long it runs, where and how it reports
RESUMABLE = ("steps", "out", "log_every", "val_every", "save_every", "workers", "device")


@dataclass(frozen=True, kw_only=True)
class LipsyncTrainConfig(RunConfig):
    """batch_size windows per step, each giving an in-sync and an off-sync pair."""

    lr: float = 3e-4
    bfm: str | None = None  # deep3d shards: BFM_model_front.mat or its folder ($FD2TALK_BFM_DIR)


@dataclass(frozen=True, kw_only=True)
class MotionTrainConfig(RunConfig):
    lr: float = 1e-4
    k: int | None = 3  # alignment mask half-width (None: no mask)
    lambda_exp: float = 1.0
    lambda_pose: float = 1.0
    lambda_sync: float = 0.1
    lip_expert: str | None = (
        None  # `fd2talk-train lipsync` checkpoint (needed when lambda_sync > 0)
    )
    # the paper's Table 2 ablation: one transformer denoises [beta, p] jointly (its loss
    # weighted by lambda_exp) instead of the Exp and Pose Transformers
    single_dit: bool = False
    # "K/N": leave out fold K of N of the train split's clips (data.folds.fold_keys), so that a frame
    # UNet can be trained on predictions for speech this model never heard (cross-fitting,
    # `fd2talk-train frames --motion-fold`); None: every training clip
    fold: str | None = None
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    diffusion_steps: int = 1000


@dataclass(frozen=True, kw_only=True)
class AutoencoderTrainConfig(RunConfig):
    batch_size: int = 8  # (reference, target) frame pairs per step
    pretrained: str | None = None  # LDM VQ-f4 diffusers directory (else `preset` from scratch)
    vgg_weights: str | None = None  # vgg16-397923af.pth for LPIPS (else $FD2TALK_VGG16 / cache)
    lr: float = 1e-4
    lambda_rec: float = 1.0
    lambda_per: float = 1.0  # 0: no LPIPS term, no VGG weights needed
    lambda_vq: float = 1.0
    pairs_per_clip: int = 4
    image_size: int = CROP_SIZE  # frames are resized to this (smaller for CPU smoke runs)
    # colour looks (frame_data.recolour: per-channel gain and gamma, alike for the pair). 0 =
    # none (a pretrained autoencoder); ~0.15 lets one trained from scratch on a few videos
    # keep a held-out video's colours
    jitter: float = 0.0


@dataclass(frozen=True, kw_only=True)
class FramesTrainConfig(RunConfig):
    autoencoder: str | None = None  # `fd2talk-train autoencoder` output (RUN/autoencoder)
    motion: str | None = None  # stage-1 checkpoint: condition on its predictions (paper)
    motion_steps: int = 50  # sampler steps for those predictions
    # `fd2talk-train motion --fold K/N` runs, one per K (cross-fitting, not the paper's): each
    # training clip's expression is predicted by the fold model that never heard it
    motion_folds: tuple[str, ...] = ()
    cond: str = Cond.dual.value  # a Cond: dual (phi1, phi2) or concat (the paper's ablation)
    lr: float = 1e-4
    items_per_clip: int = 8
    # colour jitter shared by reference and target (frame_data.jitter; images only, no latent
    # cache). 0 = none (the paper); ~0.2 makes a small dataset's UNet read the reference.
    jitter: float = 0.0
    # condition on the pose minus the reference frame's pose instead of the pose itself (the
    # paper): with few people, where the head sits tells them apart and the UNet draws the
    # person from the pose, not from the reference (the demo). Expression stays absolute (how
    # open a mouth is does not depend on the reference's)
    relative_pose: bool = False
    ref_input: bool = False  # FrameUNetConfig.ref_input: x also concatenated to J_t (not paper)
    # the reference of a training item: the clip's first valid frame (the paper) or any valid
    # frame (a few clips then give many reference/target pairs, e.g. mouths open and shut)
    ref_frame: str = RefFrame.first.value  # a RefFrame
    image_size: int = CROP_SIZE  # frames resized to this when encoded on the fly
    latent_cache: bool = True  # use the shards' latent.npy when it matches the autoencoder
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    diffusion_steps: int = 1000
