"""Stage-2 frame autoencoder: a VQ f=4 autoencoder whose decoder also sees the reference (paper
section 3.3; DESIGN.md sections 1 and 6).

    img (N,3,H,W) ──E──► latent (N,d,H/4,W/4)          encoder + quant_conv (pre-quantisation)
    decode(ref_latent, latent):
        each ──VQ codebook (straight-through)──► post_quant_conv ──► (N,d,h,w)
        [ref ; target] (N,2d,h,w) ──decoder (conv_in widened to 2d inputs)──► img (N,3,H,W)

Built on diffusers' `VQModel`, so the LDM VQ-f4 weights (e.g. the `vqvae` folder of
CompVis/ldm-celebahq-256, downloaded beforehand) load from a local diffusers directory with
`RefAutoencoder.from_pretrained(path)`. The decoder's first convolution is replaced by one taking
2d channels, with zeros on the reference half and the original weights on the target half, so
before fine-tuning `decode(ref, z)` equals the original `VQModel.decode(z)`. Fine-tuning (the
paper's L = λ_rec ||F2 - D([E(F1), E(F2)])||^2 + λ_per LPIPS, see `fd2talk.model.perceptual`)
then teaches the decoder to use the reference.

Latents follow LDM's convention: the diffusion model works on the pre-quantisation latent (the
quant_conv output), and decoding quantises it (VQ-f4 latents are not rescaled: LATENT_SCALE=1).

VQ commitment loss: `reconstruct(ref_img, img) -> (recon, commit)` (or `decode_with_commit`)
returns the codebook/commitment term of `VectorQuantizer` (already weighted with its β=0.25,
LDM's codebook_weight 1.0), averaged over the reference and the target quantisation. A trainer
adds it as is: `loss = λ_rec * mse(recon, img) + λ_per * lpips(recon, img).mean() + commit`.
`forward(ref_img, img)` returns the reconstruction only.

Saving: `save(dir)` writes `model.safetensors` (all weights, the widened conv_in included) and
then `autoencoder.json` (the config); `RefAutoencoder.load(dir)` reads them back. `fingerprint()`
is a sha256 over the config and every tensor, which latent caches store and training checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import UserError

if TYPE_CHECKING:
    from diffusers import VQModel

LATENT_SCALE = 1.0  # LDM's VQ-f4 latents are used unscaled (z_diffusion = LATENT_SCALE * E(x))
CONFIG_FILE = "autoencoder.json"  # written by `save`, last
WEIGHTS_FILE = "model.safetensors"
FORMAT = "fd2talk-ref-autoencoder"  # the "format" field of CONFIG_FILE
FORMAT_VERSION = 1
DOWN_BLOCK = "DownEncoderBlock2D"  # every encoder level; all but the last halve H and W
UP_BLOCK = "UpDecoderBlock2D"
PRETRAINED_HINT = (
    "pass a diffusers-format VQ-f4 autoencoder folder (config.json + weights), e.g. the `vqvae` "
    "folder of CompVis/ldm-celebahq-256 downloaded beforehand on a machine with internet "
    "(huggingface-cli download CompVis/ldm-celebahq-256 --include 'vqvae/*'), or use `--preset` "
    "to train an autoencoder from scratch")


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
            raise ValueError(f"block_out_channels {bad} not divisible by norm_num_groups "
                             f"{self.norm_num_groups}")

    @property
    def factor(self) -> int:
        """Spatial downsampling f: every level but the last halves H and W."""
        return 2 ** (len(self.block_out_channels) - 1)

    def vq_kwargs(self) -> dict:
        """Keyword arguments of `diffusers.VQModel` for this config."""
        levels = len(self.block_out_channels)
        return dict(
            in_channels=3, out_channels=3, down_block_types=(DOWN_BLOCK,) * levels,
            up_block_types=(UP_BLOCK,) * levels, block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block, act_fn=self.act_fn,
            latent_channels=self.latent_channels, sample_size=self.sample_size,
            num_vq_embeddings=self.num_vq_embeddings, norm_num_groups=self.norm_num_groups,
            vq_embed_dim=self.vq_embed_dim, norm_type="group",
            mid_block_add_attention=self.mid_block_add_attention)

    @classmethod
    def from_dict(cls, values: dict) -> AutoencoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


PRESETS: dict[str, AutoencoderConfig] = {
    # CPU smoke runs and tests: a train step (2 images at 256x256) in well under a second
    "tiny": AutoencoderConfig(block_out_channels=(8, 16, 32), layers_per_block=1,
                              num_vq_embeddings=512, norm_num_groups=4,
                              mid_block_add_attention=False),
    # the offline backend's from-scratch autoencoder (DESIGN.md section 6): LDM's layout, narrower
    "small": AutoencoderConfig(block_out_channels=(32, 64, 128), layers_per_block=1,
                               num_vq_embeddings=1024, norm_num_groups=16),
    # LDM VQ-f4 (CompVis/ldm-celebahq-256 `vqvae`): 128/256/512 channels, 2 layers, 8192 codes
    "paper": AutoencoderConfig(),
}


class RefAutoencoder(nn.Module):
    """VQ autoencoder whose decoder takes [quantised E(reference) ; quantised latent] (2d ch)."""

    def __init__(self, config: AutoencoderConfig, vq: VQModel | None = None):
        """Random init from `config`, or wrap the VQModel `vq` (whose settings `config` gives).

        Prefer the constructors `build`, `from_pretrained` and `load`.
        """
        super().__init__()
        from diffusers import VQModel

        self.config = config
        self.vq = vq if vq is not None else VQModel(**config.vq_kwargs())
        old = self.vq.decoder.conv_in  # Conv2d(d, C, 3): the original first decoder conv
        d = config.latent_channels
        if old.in_channels != d:
            raise ValueError(f"decoder.conv_in takes {old.in_channels} channels, expected d={d}")
        new = nn.Conv2d(2 * d, old.out_channels, old.kernel_size, old.stride, old.padding)
        with torch.no_grad():
            new.weight.zero_()  # (C, 2d, k, k): reference half [:, :d] starts at zero
            new.weight[:, d:].copy_(old.weight)  # target half: the original conv
            new.bias.copy_(old.bias)
        self.vq.decoder.conv_in = new

    # ---- constructors -------------------------------------------------------------------

    @classmethod
    def build(cls, config: AutoencoderConfig) -> RefAutoencoder:
        """A randomly initialised autoencoder (seed with torch.manual_seed for reproducibility)."""
        return cls(config)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> RefAutoencoder:
        """Load a diffusers `VQModel` folder (or a pipeline folder holding `vqvae/`), never
        downloading; widen its decoder's conv_in. A missing or invalid folder is a UserError."""
        from diffusers import VQModel

        path = Path(path).expanduser()
        if not (path / "config.json").is_file() and (path / "vqvae" / "config.json").is_file():
            path = path / "vqvae"  # the whole LDM pipeline folder was given
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(f"no VQ autoencoder at {path} (no config.json there): "
                            f"{PRETRAINED_HINT}")
        try:
            raw = json.loads(config_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{config_file} is not a readable diffusers config ({e}): "
                            f"{PRETRAINED_HINT}") from None
        if raw.get("_class_name") != "VQModel":
            raise UserError(f"{path} holds a {raw.get('_class_name')!r}, not a diffusers "
                            f"VQModel: {PRETRAINED_HINT}")
        _check_supported(raw, path)
        try:
            vq = VQModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise UserError(f"could not load the VQ autoencoder in {path}: "
                            f"{str(e).strip()[:300]}; {PRETRAINED_HINT}") from None
        config = AutoencoderConfig.from_dict(dict(vq.config))
        return cls(config, vq.float())

    @classmethod
    def load(cls, path: str | Path) -> RefAutoencoder:
        """Read a folder written by `save` (our fine-tuned autoencoder)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path).expanduser()
        config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not config_file.is_file() or not weights_file.is_file():
            raise UserError(f"no fine-tuned autoencoder at {path} (needs {CONFIG_FILE} and "
                            f"{WEIGHTS_FILE}, written by the autoencoder training step); for a "
                            "diffusers VQModel folder use the pretrained-autoencoder option")
        meta = json.loads(config_file.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise UserError(f"{config_file} is not a {FORMAT} v{FORMAT_VERSION} config")
        model = cls.build(AutoencoderConfig.from_dict(meta["config"]))
        try:
            state = load_file(weights_file)
            model.load_state_dict(state)
        except (SafetensorError, RuntimeError) as e:
            raise UserError(f"{weights_file} does not match {config_file}: "
                            f"{str(e).strip()[:300]}") from None
        return model

    def save(self, path: str | Path) -> None:
        """Write `model.safetensors`, then `autoencoder.json` (last), atomically, into `path`."""
        from safetensors.torch import save_file

        from fd2talk.pipeline.atomic import atomic_path, write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        write_json(path / CONFIG_FILE, {"format": FORMAT, "version": FORMAT_VERSION,
                                        "latent_scale": LATENT_SCALE,
                                        "config": dataclasses.asdict(self.config)})

    # ---- properties ---------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def factor(self) -> int:
        return self.config.factor

    def fingerprint(self) -> str:
        """sha256 hex over the config, LATENT_SCALE and every tensor (name, dtype, shape, bytes):
        equal exactly when two autoencoders produce the same latents."""
        h = hashlib.sha256()
        h.update(json.dumps({"config": dataclasses.asdict(self.config),
                             "latent_scale": LATENT_SCALE}, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    # ---- the network --------------------------------------------------------------------

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """img (N,3,H,W) in [-1,1] -> pre-quantisation latent (N,d,H/f,W/f), times LATENT_SCALE."""
        f = self.factor
        if img.ndim != 4 or img.shape[1] != 3 or img.shape[2] % f or img.shape[3] % f:
            raise ValueError(f"expected images (N, 3, H, W) with H, W divisible by {f}, "
                             f"got {tuple(img.shape)}")
        h = self.vq.encoder(img)  # (N, d, h, w)
        return self.vq.quant_conv(h) * LATENT_SCALE  # (N, d, h, w)

    def _quantise(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent (N,d,h,w) -> (post_quant_conv(codebook entry) (N,d,h,w), commit loss ())."""
        quant, commit, _ = self.vq.quantize(latent / LATENT_SCALE)  # straight-through gradient
        return self.vq.post_quant_conv(quant), commit

    def decode_with_commit(self, ref_latent: torch.Tensor,
                           latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ref_latent, latent) (N,d,h,w) each -> (img (N,3,h*f,w*f), commit loss (scalar))."""
        if ref_latent.shape != latent.shape:
            raise ValueError(f"reference latent {tuple(ref_latent.shape)} and latent "
                             f"{tuple(latent.shape)} differ in shape")
        ref_q, ref_commit = self._quantise(ref_latent)  # (N, d, h, w)
        tgt_q, tgt_commit = self._quantise(latent)  # (N, d, h, w)
        img = self.vq.decoder(torch.cat([ref_q, tgt_q], dim=1))  # (N,2d,h,w) -> (N,3,H,W)
        return img, (ref_commit + tgt_commit) / 2

    def decode(self, ref_latent: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """(ref_latent, latent) (N,d,h,w) each -> img (N,3,h*f,w*f): D([x, J0])."""
        return self.decode_with_commit(ref_latent, latent)[0]

    def reconstruct(self, ref_img: torch.Tensor,
                    img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ref_img F1, img F2) (N,3,H,W) -> (D([E(F1), E(F2)]) (N,3,H,W), commit loss ())."""
        n = img.shape[0]
        z = self.encode(torch.cat([ref_img, img]))  # (2N, d, h, w): one encoder pass
        return self.decode_with_commit(z[:n], z[n:])

    def forward(self, ref_img: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """(ref_img, img) (N,3,H,W) -> reconstruction of img (N,3,H,W)."""
        return self.reconstruct(ref_img, img)[0]


def _check_supported(raw: dict, path: Path) -> None:
    """Refuse VQModel settings this class does not reproduce (a UserError naming them)."""
    problems = []
    if raw.get("norm_type", "group") != "group":
        problems.append(f"norm_type={raw['norm_type']!r} (only 'group')")
    for key, block in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
        types = raw.get(key) or []
        if len(types) != len(raw.get("block_out_channels") or []) or set(types) != {block}:
            problems.append(f"{key}={types} (only {block} at every level)")
    for key in ("in_channels", "out_channels"):
        if raw.get(key, 3) != 3:
            problems.append(f"{key}={raw[key]} (only 3)")
    if problems:
        raise UserError(f"the VQModel in {path} has settings this autoencoder does not support: "
                        f"{'; '.join(problems)}; {PRETRAINED_HINT}")
