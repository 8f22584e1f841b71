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
paper's L = λ_rec ||F2 - D([E(F1), E(F2)])||^2 + λ_per LPIPS, see `fd2talk.model.nets.perceptual`)
then teaches the decoder to use the reference.

Latents follow LDM's convention: the diffusion model works on the pre-quantisation latent (the
quant_conv output), and decoding quantises it. `encode` returns them unscaled (LATENT_SCALE = 1);
the frame UNet diffuses them times the measured `scaling_factor` (`model/data/latent_scale.py`).

VQ commitment loss: `reconstruct(ref_img, img) -> (recon, commit)` (or `decode_with_commit`)
returns the codebook/commitment term of `VectorQuantizer` (already weighted with its β=0.25,
LDM's codebook_weight 1.0), averaged over the reference and the target quantisation. A trainer
adds it as is: `loss = λ_rec * mse(recon, img) + λ_per * lpips(recon, img).mean() + commit`.
`forward(ref_img, img)` returns the reconstruction only.

Saving: `save(dir)` writes `model.safetensors` (all weights, the widened conv_in included) and
then `autoencoder.json` (the config, the fingerprint and the measured latent `scaling_factor`
the frame UNet works with); `RefAutoencoder.load(dir)` reads them back. `fingerprint()`
is a sha256 over the config and every tensor, which latent caches store and training checks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from fd2talk.core.errors import UserError
from fd2talk.model.configs import AUTOENCODER_PRESETS as PRESETS  # noqa: F401  (re-exported)
from fd2talk.model.configs import DOWN_BLOCK, UP_BLOCK, AutoencoderConfig

if TYPE_CHECKING:
    from diffusers import VQModel

LATENT_SCALE = 1.0  # LDM's VQ-f4 latents are used unscaled (z_diffusion = LATENT_SCALE * E(x))
CONFIG_FILE = "autoencoder.json"  # written by `save`, last
WEIGHTS_FILE = "model.safetensors"
FORMAT = "fd2talk-ref-autoencoder"  # the "format" field of CONFIG_FILE
FORMAT_VERSION = 1
PRETRAINED_HINT = (
    "pass a diffusers-format VQ-f4 autoencoder folder (config.json + weights), e.g. the `vqvae` "
    "folder of CompVis/ldm-celebahq-256 downloaded beforehand on a machine with internet "
    "(huggingface-cli download CompVis/ldm-celebahq-256 --include 'vqvae/*'), or use `--preset` "
    "to train an autoencoder from scratch"
)


class RefAutoencoder(nn.Module):
    """VQ autoencoder whose decoder takes [quantised E(reference) ; quantised latent] (2d ch)."""

    def __init__(self, config: AutoencoderConfig, vq: VQModel | None = None):
        """Random init from `config`, or wrap the VQModel `vq` (whose settings `config` gives).

        Prefer the constructors `build`, `from_pretrained` and `load`.
        """
        super().__init__()
        from diffusers import VQModel

        self.config = config
        # 1 / std of the latents of frames across the training set (Stable Diffusion's
        # `scaling_factor`): the frame UNet diffuses latents * scaling_factor. Measured by
        # `fd2talk-train autoencoder` (`latent_scale.measure`) and saved with the weights.
        self.scaling_factor: float | None = None
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
            raise UserError(
                f"no VQ autoencoder at {path} (no config.json there): {PRETRAINED_HINT}"
            )
        try:
            raw = json.loads(config_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(
                f"{config_file} is not a readable diffusers config ({e}): {PRETRAINED_HINT}"
            ) from None
        if raw.get("_class_name") != "VQModel":
            raise UserError(
                f"{path} holds a {raw.get('_class_name')!r}, not a diffusers "
                f"VQModel: {PRETRAINED_HINT}"
            )
        _check_supported(raw, path)
        try:
            vq = VQModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise UserError(
                f"could not load the VQ autoencoder in {path}: "
                f"{str(e).strip()[:300]}; {PRETRAINED_HINT}"
            ) from None
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
            raise UserError(
                f"no fine-tuned autoencoder at {path} (needs {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}, written by the autoencoder training step); for a "
                "diffusers VQModel folder use the pretrained-autoencoder option"
            )
        meta = json.loads(config_file.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise UserError(f"{config_file} is not a {FORMAT} v{FORMAT_VERSION} config")
        model = cls.build(AutoencoderConfig.from_dict(meta["config"]))
        try:
            state = load_file(weights_file)
            model.load_state_dict(state)
        except (SafetensorError, RuntimeError) as e:
            raise UserError(
                f"{weights_file} does not match {config_file}: {str(e).strip()[:300]}"
            ) from None
        model.scaling_factor = meta.get("scaling_factor")
        return model

    def record(self) -> dict:
        """The autoencoder.json record: format, config, fingerprint and the measured latent
        scaling factor (None until `latent_scale.measure` set it)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "latent_scale": LATENT_SCALE,
            "scaling_factor": self.scaling_factor,
            "fingerprint": self.fingerprint(),
            "config": dataclasses.asdict(self.config),
        }

    def save(self, path: str | Path) -> None:
        """Write `model.safetensors`, then `autoencoder.json` (last), atomically, into `path`."""
        from safetensors.torch import save_file

        from fd2talk.core.atomic import atomic_path, follow_umask, write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
            follow_umask(tmp)  # safetensors writes 0600 whatever the umask
        write_json(path / CONFIG_FILE, self.record())

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
        from fd2talk.core.revision import tensor_fingerprint

        return tensor_fingerprint(
            {"config": dataclasses.asdict(self.config), "latent_scale": LATENT_SCALE},
            self.state_dict(),
        )

    # ---- the network --------------------------------------------------------------------

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """img (N,3,H,W) in [-1,1] -> pre-quantisation latent (N,d,H/f,W/f), times LATENT_SCALE."""
        f = self.factor
        if img.ndim != 4 or img.shape[1] != 3 or img.shape[2] % f or img.shape[3] % f:
            raise ValueError(
                f"expected images (N, 3, H, W) with H, W divisible by {f}, got {tuple(img.shape)}"
            )
        h = self.vq.encoder(img)  # (N, d, h, w)
        return self.vq.quant_conv(h) * LATENT_SCALE  # (N, d, h, w)

    def _quantise(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent (N,d,h,w) -> (post_quant_conv(codebook entry) (N,d,h,w), commit loss ())."""
        quant, commit, _ = self.vq.quantize(latent / LATENT_SCALE)  # straight-through gradient
        return self.vq.post_quant_conv(quant), commit

    def decode_with_commit(
        self, ref_latent: torch.Tensor, latent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ref_latent, latent) (N,d,h,w) each -> (img (N,3,h*f,w*f), commit loss (scalar))."""
        if ref_latent.shape != latent.shape:
            raise ValueError(
                f"reference latent {tuple(ref_latent.shape)} and latent "
                f"{tuple(latent.shape)} differ in shape"
            )
        ref_q, ref_commit = self._quantise(ref_latent)  # (N, d, h, w)
        tgt_q, tgt_commit = self._quantise(latent)  # (N, d, h, w)
        img = self.vq.decoder(torch.cat([ref_q, tgt_q], dim=1))  # (N,2d,h,w) -> (N,3,H,W)
        return img, (ref_commit + tgt_commit) / 2

    def decode(self, ref_latent: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """(ref_latent, latent) (N,d,h,w) each -> img (N,3,h*f,w*f): D([x, J0])."""
        return self.decode_with_commit(ref_latent, latent)[0]

    def reconstruct(
        self, ref_img: torch.Tensor, img: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
        raise UserError(
            f"the VQModel in {path} has settings this autoencoder does not support: "
            f"{'; '.join(problems)}; {PRETRAINED_HINT}"
        )


def load_autoencoder(path: str | Path | None, device: str) -> RefAutoencoder:
    """The frozen fine-tuned autoencoder in `path` (RUN/autoencoder or MODEL/autoencoder), for
    the frame UNet's training and for sampling."""
    if not path:
        raise UserError(
            "--autoencoder is required: train one with `fd2talk-train autoencoder "
            "--shards SHARDS --out RUN`, then pass RUN/autoencoder"
        )
    return RefAutoencoder.load(path).to(device).eval().requires_grad_(False)
