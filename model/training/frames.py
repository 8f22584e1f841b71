"""`fd2talk-train frames`: the dual cross-attention Diffusion UNet of stage 2 (paper sections
3.3, 3.4.2).

Training tuple (J0, t, beta~, p~, x): J0 the latent of a random frame of a clip, x the latent of
the clip's first frame (the reference), [beta~, p~] that frame's motion, either ground truth
(default) or predicted by a stage-1 model (`motion=...`, the paper's choice: every train and
val clip's motion is sampled once from its audio at start, split over the ranks under DDP, and
cached in the run dir with a record of the model, sampler, steps, seed and shards that made it;
a cache made otherwise is sampled again). With `motion_folds` (cross-fitting, not the
paper's), each training clip's *expression* comes instead from the stage-1 model trained
without that clip (`fd2talk-train motion --fold K/N`): a small dataset's stage 1 has learnt its
training clips by heart, so the UNet would otherwise never see what stage 1 makes of speech
it has not heard, such as a mouth range that is not this person's. The pose stays the full
model's (head motion is not predictable from speech: a pose unrelated to the frame's would
teach the UNet to ignore pose). The
loss is `Diffusion.loss` (x0 prediction) on J0. Latents come from the shards' latent cache
when it was made by this run's autoencoder (`fd2talk-prep latents`), else the frozen encoder
runs on the decoded frames every step; a cache made by another autoencoder is an error.

Same machinery as stage 1 (model/training/run.py and its helpers): EMA, atomic checkpoints,
bit-for-bit resume, DDP under torchrun, bf16 autocast on CUDA, validation (x0 loss of the EMA
UNet on fixed items at step 0 and every `val_every` steps), metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from fd2talk.core.device import autocast
from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE
from fd2talk.model.configs import Cond, FramesTrainConfig
from fd2talk.model.data import loader as data_mod
from fd2talk.model.data.frame_items import FrameItems
from fd2talk.model.data.normalize import Stats
from fd2talk.model.data.windows import collate
from fd2talk.model.diffusion import Diffusion, DiffusionConfig
from fd2talk.model.training.distributed import no_sync, wrap_ddp
from fd2talk.model.training.ema import EMA
from fd2talk.model.training.metrics import Mean
from fd2talk.model.training.motion_cache import (
    fold_parts,
    motion_cache,
    motion_cache_meta,
    motion_condition,
)
from fd2talk.model.training.rng import noise_generator
from fd2talk.model.training.run import Parts, start_run


def latents(
    batch: dict, ae, cached: bool, device: str, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(J0, x): target and reference latents (N, d, h, w) times `scale`, from the cache or the
    encoder."""
    ref, frame = batch["ref"].to(device), batch["frame"].to(device)
    if cached:
        return frame.float() * scale, ref.float() * scale
    with torch.no_grad():
        return ae.encode(frame) * scale, ae.encode(ref) * scale


def val_items(
    shards: str, split: str, maker: FrameItems, size: int, seed: int, limit: int = 64
) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for clip in data_mod.iter_clips(shards, split, maker.fields()):
        items += maker(clip, rng)
        if len(items) >= limit:
            break
    items = items[:limit]
    return [collate(items[i : i + size]) for i in range(0, len(items), size)]


def train_frames(cfg: FramesTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train the frame UNet; returns the last validation metrics."""
    from fd2talk.model.data.latent_cache import check_latents
    from fd2talk.model.nets.autoencoder import load_autoencoder
    from fd2talk.model.nets.frame_unet import PRESETS, FrameUNet

    if cfg.cond not in set(Cond):
        raise UserError(f"--cond must be {' or '.join(Cond)}, not {cfg.cond!r}")
    run = start_run(cfg, "frames", resume, PRESETS)
    d = run.d
    ae = load_autoencoder(cfg.autoencoder, d.device)
    scale = ae.scaling_factor
    if scale is None:
        raise UserError(
            f"the autoencoder {cfg.autoencoder} has no measured latent scaling factor "
            "(an older fd2talk wrote it): train it again with `fd2talk-train "
            "autoencoder` (this version measures and saves it)"
        )
    if run.state:
        run.refuse(
            None
            if run.extras["autoencoder"] == ae.fingerprint()
            else f"trained with another autoencoder than {cfg.autoencoder}: resume with the "
            "same one"
        )
    info = data_mod.dataset_info(cfg.shards, "train", ("exp", "pose", "valid"))
    urls = data_mod.split_shards(cfg.shards, "train")
    cached = cfg.latent_cache and check_latents(cfg.shards, ae.fingerprint(), ae.latent_channels)
    if cached and cfg.image_size != CROP_SIZE:
        raise UserError(
            f"the shards' latent cache holds {CROP_SIZE}px frames' latents but "
            f"--image-size is {cfg.image_size}: use {CROP_SIZE}, or --no-latent-cache"
        )
    if cached and cfg.jitter > 0:
        raise UserError(
            f"--jitter {cfg.jitter} recolours the frames before they are encoded, so "
            "it cannot use the shards' latent cache: add --no-latent-cache, or "
            "--jitter 0"
        )
    maker = FrameItems(
        cfg.items_per_clip,
        latents=cached,
        image_size=cfg.image_size,
        ref_frame=cfg.ref_frame,
        jitter=cfg.jitter,
    )
    plain = FrameItems(cfg.items_per_clip, latents=cached, image_size=cfg.image_size)  # val
    val = (
        val_items(cfg.shards, cfg.val_split, plain, cfg.batch_size, cfg.seed + 1)
        if cfg.val_split
        else []
    )
    stats = (
        Stats.from_state_dict(run.extras["stats"])
        if run.state
        else Stats.compute(
            data_mod.iter_clips(cfg.shards, "train", ("exp", "pose", "valid")),
            streams=("exp", "pose"),
        )
    )
    part = meta = folds = None
    if cfg.motion:  # the stage-1 model is read once: for its record and, if need be, sampling
        from fd2talk.model.store import folder as pretrained

        part = pretrained.require(pretrained.load_parts([cfg.motion]), "motion", [cfg.motion])
        splits = ("train",) + ((cfg.val_split,) if cfg.val_split else ())
        meta = motion_cache_meta(
            part, cfg.motion, cfg.shards, splits, cfg.motion_steps, cfg.seed, info
        )
        if cfg.motion_folds:
            folds = fold_parts(cfg.motion_folds, cfg.shards)
            meta["folds"] = [pretrained.fingerprint(f) for f in folds]
    elif cfg.motion_folds:
        raise UserError(
            "--motion-fold needs --motion: the stage-1 model trained on every clip "
            "(the pose, the validation clips and generation use it)"
        )
    if run.state:
        run.refuse(
            None
            if run.extras["dataset"] == dataclasses.asdict(info)
            else f"trained on {run.extras['dataset']} but the shards hold "
            f"{dataclasses.asdict(info)}: use the shards it was trained on"
        )
        run.refuse(
            None
            if run.extras.get("motion_cache") == meta
            else f"conditioned on the stage-1 model {cfg.motion} as it was when the run "
            "started, and that model has changed since: start a new run"
        )
    cache = motion_cache(cfg, run, part, meta, progress, folds)
    unet_config = dataclasses.replace(
        PRESETS[cfg.preset],
        cond=cfg.cond,
        latent_channels=ae.latent_channels,
        ref_input=cfg.ref_input,
    )
    net = FrameUNet(unet_config, info.exp_dim + 6).to(d.device)
    diffusion = Diffusion(DiffusionConfig(steps=cfg.diffusion_steps))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    ema = EMA(net, cfg.ema_decay)
    gen = noise_generator(cfg.seed, d.rank)  # diffusion timesteps and noise
    parts = Parts({"unet": net}, {"unet": opt}, {"unet": ema}, gen)
    step = run.restore(parts)
    model = wrap_ddp(net, d)
    stream = data_mod.StreamConfig(
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        epoch_batches=cfg.epoch_batches,
        shuffle_buffer=4 * cfg.batch_size,
    )
    batches = data_mod.batches_from(
        urls,
        stream,
        maker.fields(),
        cfg.seed,
        step * cfg.accumulate,
        d.rank,
        d.world,
        make_items=maker,
    )
    extras = {
        "dataset": dataclasses.asdict(info),
        "stats": stats.state_dict(),
        "autoencoder": ae.fingerprint(),
        "autoencoder_path": str(cfg.autoencoder),
        "latent_cache": cached,
        "latent_scale": scale,
        "motion_cache": meta,
        "unet_config": dataclasses.asdict(unet_config),
        "motion_dim": info.exp_dim + 6,
        "diffusion": dataclasses.asdict(diffusion.config),
        "relative_pose": cfg.relative_pose,
    }

    def loss_of(unet, batch, g) -> torch.Tensor:
        j0, x = latents(batch, ae, cached, d.device, scale)
        cond = motion_condition(batch, stats, cache, cfg.relative_pose).to(d.device)
        t = diffusion.sample_t(len(j0), generator=g).to(d.device)
        noise = torch.randn(j0.shape, generator=g).to(d.device)
        return diffusion.loss(lambda j_t, t_: unet(j_t, t_, cond, x), j0, t=t, noise=noise)["loss"]

    @torch.no_grad()
    def validate() -> dict:  # the EMA UNet, what generation samples with
        g = torch.Generator().manual_seed(cfg.seed + 2)
        return {"loss": float(np.mean([float(loss_of(ema.model, b, g)) for b in val]))}

    run.begin(step)
    metrics = {}
    if cfg.val_split and step == 0:  # the untrained baseline
        metrics = run.log_val(step, validate())
    run.start_progress(step, progress)
    while step < cfg.steps:
        # one optimizer step on the mean gradient of cfg.accumulate micro-batches
        opt.zero_grad(set_to_none=True)
        train = Mean(cfg.accumulate)
        for i in range(cfg.accumulate):
            with no_sync([model], i < cfg.accumulate - 1):  # DDP all-reduces on the last
                batch = next(batches)
                with autocast(d.device, "bf16", cuda_only=True):
                    loss = loss_of(model, batch, gen)
                (loss / cfg.accumulate).backward()
            train.add(loss)
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(net, step)
        step += 1

        run.bar.update(1)
        if run.should_log(step):
            run.log_train(step, train.values)
        if run.should_validate(step):
            metrics = run.log_val(step, validate())
        if run.should_save(step):
            run.save(step, parts, extras)
    if run.saved != step:  # --steps 0: the untrained model
        run.save(step, parts, extras)
    run.finish()  # RUN/model from the last checkpoint (the EMA UNet and its autoencoder)
    return metrics
