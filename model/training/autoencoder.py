"""`fd2talk-train autoencoder`: fine-tune the reference-conditioned VQ autoencoder (paper
section 3.3, eq. 7):

    L = lambda_rec ||F2 - D([E(F1), E(F2)])||^2 + lambda_per LPIPS(F2, D(...)) + lambda_vq L_vq

F1, F2: two random frames of one clip (`frame_data.AutoencoderPairs`). L_vq is the VQ
codebook/commitment loss of the quantiser the decoder applies (the VQGAN training term the
paper's pre-trained model was made with). Start from LDM's VQ-f4 (`pretrained=DIR`, a local
diffusers VQModel directory) or from scratch (`preset`). Validation: PSNR of D([E(F1), E(F2)])
against F2 on fixed pairs of the val split (step 0 and every `val_every` steps). The trained
model is saved to RUN/autoencoder (`RefAutoencoder.save`), what `fd2talk-prep latents`,
`fd2talk-train frames` and generation load, with its latent scaling factor measured over
frames of many training clips at every checkpoint (`latent_scale.measure`).
"""

from __future__ import annotations

import dataclasses
import random

import torch

from fd2talk.core.device import autocast
from fd2talk.core.errors import UserError
from fd2talk.model.configs import AutoencoderTrainConfig
from fd2talk.model.data import loader as data_mod
from fd2talk.model.data.frame_items import AE_FIELDS, AutoencoderPairs
from fd2talk.model.data.windows import collate
from fd2talk.model.training.distributed import barrier, no_sync, wrap_ddp
from fd2talk.model.training.metrics import Mean
from fd2talk.model.training.run import Parts, start_run

AUTOENCODER_DIR = "autoencoder"


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


def val_pairs(
    shards: str, split: str, maker: AutoencoderPairs, size: int, seed: int, limit: int = 32
) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for clip in data_mod.iter_clips(shards, split, AE_FIELDS):
        items += maker(clip, rng)
        if len(items) >= limit:
            break
    items = items[:limit]
    return [collate(items[i : i + size]) for i in range(0, len(items), size)]


def build_autoencoder(cfg: AutoencoderTrainConfig):
    from fd2talk.model.nets.autoencoder import PRESETS, RefAutoencoder

    if cfg.pretrained:
        return RefAutoencoder.from_pretrained(cfg.pretrained)
    return RefAutoencoder.build(PRESETS[cfg.preset])


def train_autoencoder(
    cfg: AutoencoderTrainConfig, resume: bool = False, progress: bool = True
) -> dict:
    """Fine-tune the autoencoder; returns the last validation metrics."""
    from fd2talk.model.data import latent_scale
    from fd2talk.model.nets.autoencoder import PRESETS

    run = start_run(cfg, "autoencoder", resume, None if cfg.pretrained else PRESETS)
    d = run.d
    data_mod.dataset_info(cfg.shards, "train", AE_FIELDS)  # clear errors before anything heavy
    urls = data_mod.split_shards(cfg.shards, "train")
    maker = AutoencoderPairs(cfg.pairs_per_clip, cfg.image_size, cfg.jitter)
    plain = AutoencoderPairs(cfg.pairs_per_clip, cfg.image_size)  # validation: true colours
    val = (
        val_pairs(cfg.shards, cfg.val_split, plain, cfg.batch_size, cfg.seed + 1)
        if cfg.val_split
        else []
    )
    perceptual = None
    if cfg.lambda_per > 0:
        from fd2talk.model.nets.perceptual import Perceptual

        perceptual = Perceptual(cfg.vgg_weights).to(d.device)
    ae = build_autoencoder(cfg).to(d.device)
    if cfg.image_size % ae.factor:
        raise UserError(
            f"--image-size {cfg.image_size} is not divisible by the autoencoder's "
            f"downsampling factor {ae.factor}"
        )
    opt = torch.optim.Adam(ae.parameters(), lr=cfg.lr)
    parts = Parts({"autoencoder": ae}, {"autoencoder": opt})
    step = run.restore(parts)
    model = wrap_ddp(_Reconstruction(ae), d)
    stream = data_mod.StreamConfig(
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        epoch_batches=cfg.epoch_batches,
        shuffle_buffer=4 * cfg.batch_size,
    )
    batches = data_mod.batches_from(
        urls, stream, AE_FIELDS, cfg.seed, step * cfg.accumulate, d.rank, d.world, make_items=maker
    )

    @torch.no_grad()
    def validate() -> dict:
        ae.eval()
        scores = [
            psnr(ae(b["ref"].to(d.device), b["frame"].to(d.device)), b["frame"].to(d.device))
            for b in val
        ]
        ae.train()
        return {"psnr": float(torch.cat(scores).mean())}

    def save(step: int) -> None:
        """The checkpoint, with the latent scale of the weights it saves (measured on rank 0,
        which writes it), then RUN/autoencoder, the folder later stages load."""
        extras = {}
        if d.main:
            ae.eval()
            ae.scaling_factor = latent_scale.measure(ae, cfg.shards, cfg.image_size, d.device)
            ae.train()
            extras = {
                "autoencoder_config": dataclasses.asdict(ae.config),
                "scaling_factor": ae.scaling_factor,
            }
        run.save(step, parts, extras)
        if d.main:
            ae.save(run.out / AUTOENCODER_DIR)
        barrier(d)

    run.begin(step)
    metrics = {}
    if cfg.val_split and step == 0:  # the untrained (or pre-trained) baseline
        metrics = run.log_val(step, validate())
    run.start_progress(step, progress)
    while step < cfg.steps:
        # one optimizer step on the mean gradient of cfg.accumulate micro-batches
        opt.zero_grad(set_to_none=True)
        train = Mean(cfg.accumulate)
        for i in range(cfg.accumulate):
            with no_sync([model], i < cfg.accumulate - 1):  # DDP all-reduces on the last
                b = next(batches)
                ref, frame = b["ref"].to(d.device), b["frame"].to(d.device)
                with autocast(d.device, "bf16", cuda_only=True):
                    recon, commit = model(ref, frame)
                    rec = ((recon.float() - frame) ** 2).mean()
                    terms = {"rec": rec, "vq": commit.float()}
                    if perceptual is not None:
                        terms["per"] = perceptual(recon.float(), frame).mean()
                loss = (
                    cfg.lambda_rec * terms["rec"]
                    + cfg.lambda_vq * terms["vq"]  # eq. 7
                    + (cfg.lambda_per * terms["per"] if "per" in terms else 0.0)
                )
                (loss / cfg.accumulate).backward()
            train.add(loss, {f"loss_{k}": float(v.detach()) for k, v in terms.items()})
        opt.step()
        step += 1

        run.bar.update(1)
        if run.should_log(step):
            run.log_train(step, train.values)
        if run.should_validate(step):
            metrics = run.log_val(step, validate())
        if run.should_save(step):
            save(step)
    if run.saved != step:  # --steps 0: the untrained (or pre-trained) model
        save(step)
    run.finish()  # RUN/model from the last checkpoint
    return metrics


class _Reconstruction(torch.nn.Module):
    """forward = RefAutoencoder.reconstruct (image and VQ loss), so DDP wraps the whole step."""

    def __init__(self, ae):
        super().__init__()
        self.ae = ae

    def forward(self, ref: torch.Tensor, img: torch.Tensor):
        return self.ae.reconstruct(ref, img)
