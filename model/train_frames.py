"""`fd2talk-train frames`: the dual cross-attention Diffusion UNet of stage 2 (paper sections
3.3, 3.4.2).

Training tuple (J0, t, beta~, p~, x): J0 the latent of a random frame of a clip, x the latent of
the clip's first frame (the reference), [beta~, p~] that frame's motion, either ground truth
(default) or predicted by a stage-1 checkpoint (`motion=...`, the paper's choice: every train
and val clip's motion is sampled once from its audio at start and cached in the run dir). The
loss is `Diffusion.loss` (x0 prediction) on J0. Latents come from the shards' latent cache
when it was made by this run's autoencoder (`fd2talk-prep latents`), else the frozen encoder
runs on the decoded frames every step; a cache made by another autoencoder is an error.

Same machinery as stage 1 (model/trainer.py): EMA, atomic checkpoints, bit-for-bit resume,
DDP under torchrun, bf16 autocast on CUDA, validation (x0 loss on fixed items at step 0 and
every `val_every` steps), metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from . import trainer
from .diffusion import Diffusion, DiffusionConfig
from .errors import UserError
from .frame_data import FrameItems
from .normalize import Stats
from .schema import CROP_SIZE

MOTION_CACHE = "predicted_motion.npz"


@dataclass(frozen=True, kw_only=True)
class FramesTrainConfig(trainer.RunConfig):
    autoencoder: str | None = None  # `fd2talk-train autoencoder` output (RUN/autoencoder)
    motion: str | None = None  # stage-1 checkpoint: condition on its predictions (paper)
    motion_steps: int = 50  # sampler steps for those predictions
    cond: str = "dual"  # "dual" (phi1, phi2) or "concat" (the paper's ablation)
    lr: float = 1e-4
    items_per_clip: int = 8
    # colour jitter shared by reference and target (frame_data.jitter; images only, no latent
    # cache). 0 = none (the paper); ~0.2 makes a small dataset's UNet read the reference.
    jitter: float = 0.0
    image_size: int = CROP_SIZE  # frames resized to this when encoded on the fly
    latent_cache: bool = True  # use the shards' latent.npy when it matches the autoencoder
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    diffusion_steps: int = 1000


def load_autoencoder(path: str | None, device: str):
    from .autoencoder import RefAutoencoder

    if not path:
        raise UserError("--autoencoder is required: train one with `fd2talk-train autoencoder "
                        "--shards SHARDS --out RUN`, then pass RUN/autoencoder")
    return RefAutoencoder.load(path).to(device).eval().requires_grad_(False)


def predicted_motion(path: str, shards: str, splits: tuple[str, ...], steps: int, device: str,
                     seed: int, progress: bool = True) -> dict[str, np.ndarray]:
    """{key: (F, D_exp + 6) raw [beta, p]} sampled by the stage-1 model from each clip's audio."""
    from tqdm import tqdm

    from . import motion as motion_mod

    model = motion_mod.load_motion(path, device)
    out = {}
    clips = [c for split in splits for c in data_mod.iter_clips(shards, split)]
    for clip in tqdm(clips, desc="stage-1 motion", leave=False, disable=not progress):
        m = motion_mod.sample(model, clip["audio"], steps=steps, seed=seed)
        out[clip["key"]] = np.concatenate([m["exp"], m["pose"]], 1).astype(np.float32)
    return out


def motion_condition(batch: dict, stats: Stats, cache: dict | None) -> torch.Tensor:
    """(N, D_exp + 6) normalised [beta, p]: ground truth, or the stage-1 predictions."""
    if cache is None:
        exp, pose = batch["exp"], batch["pose"]
    else:
        rows = np.stack([cache[k][i] for k, i in zip(batch["key"], batch["index"].tolist(),
                                                      strict=True)])
        d = stats.dim("exp")
        exp, pose = torch.from_numpy(rows[:, :d]), torch.from_numpy(rows[:, d:])
    return torch.cat([stats.normalize("exp", exp), stats.normalize("pose", pose)], -1)


def latents(batch: dict, ae, cached: bool, device: str, scale: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(J0, x): target and reference latents (N, d, h, w) times `scale`, from the cache or the
    encoder."""
    ref, frame = batch["ref"].to(device), batch["frame"].to(device)
    if cached:
        return frame.float() * scale, ref.float() * scale
    with torch.no_grad():
        return ae.encode(frame) * scale, ae.encode(ref) * scale


def latent_scale(ae, shards: str, maker: FrameItems, device: str, frames: int = 256) -> float:
    """1 / std of the train split's latents (its first `frames` frames), so the UNet diffuses
    unit-variance latents whatever the autoencoder (Stable Diffusion's scale factor, measured)."""
    rng = random.Random(0)
    items: list[dict] = []
    for clip in data_mod.iter_clips(shards, "train", maker.fields()):
        items += FrameItems(frames, maker.latents, maker.size)(clip, rng)
        if len(items) >= frames:
            break
    batch = data_mod.collate(items[:frames])
    z = torch.cat([latents({"ref": batch["ref"][i:i + 32], "frame": batch["frame"][i:i + 32]},
                           ae, maker.latents, device, 1.0)[0] for i in range(0, frames, 32)])
    return float(1.0 / z.float().std().clamp_min(1e-6))


def val_items(shards: str, split: str, maker: FrameItems, size: int, seed: int,
              limit: int = 64) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for clip in data_mod.iter_clips(shards, split, maker.fields()):
        items += maker(clip, rng)
        if len(items) >= limit:
            break
    items = items[:limit]
    return [data_mod.collate(items[i:i + size]) for i in range(0, len(items), size)]


def train_frames(cfg: FramesTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train the frame UNet; returns the last validation metrics."""
    from fd2talk.pipeline.shard import git_revision

    from .frame_unet import PRESETS, FrameUNet
    from .latent_cache import check_latents

    if cfg.preset not in PRESETS:
        raise UserError(f"unknown preset {cfg.preset!r}: choose one of {', '.join(PRESETS)}")
    if cfg.cond not in ("dual", "concat"):
        raise UserError(f"--cond must be dual or concat, not {cfg.cond!r}")
    d = trainer.setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    ae = load_autoencoder(cfg.autoencoder, d.device)
    info = data_mod.dataset_info(cfg.shards, "train", ("exp", "pose", "valid"))
    urls = data_mod.split_shards(cfg.shards, "train")
    cached = cfg.latent_cache and check_latents(cfg.shards, ae.fingerprint(), ae.latent_channels)
    if cached and cfg.image_size != CROP_SIZE:
        raise UserError(f"the shards' latent cache holds {CROP_SIZE}px frames' latents but "
                        f"--image-size is {cfg.image_size}: use {CROP_SIZE}, or --no-latent-cache")
    if cached and cfg.jitter > 0:
        raise UserError(f"--jitter {cfg.jitter} recolours the frames before they are encoded, so "
                        "it cannot use the shards' latent cache: add --no-latent-cache, or "
                        "--jitter 0")
    maker = FrameItems(cfg.items_per_clip, latents=cached, image_size=cfg.image_size,
                       jitter=cfg.jitter)
    plain = FrameItems(cfg.items_per_clip, latents=cached, image_size=cfg.image_size)  # val
    val = (val_items(cfg.shards, cfg.val_split, plain, cfg.batch_size, cfg.seed + 1)
           if cfg.val_split else [])
    config = trainer.config_dict(cfg)
    ckpt_path = trainer.prepare_run_dir(Path(cfg.out), resume, d.main, config, git_revision())
    state = trainer.load_checkpoint(ckpt_path) if ckpt_path else None
    if state:
        scale = float(state["latent_scale"])
        if state["autoencoder"] != ae.fingerprint():
            raise UserError(f"{ckpt_path} was trained with another autoencoder than "
                            f"{cfg.autoencoder}: resume with the same one")
        trainer.check_resumable(state["config"], config, trainer.RESUMABLE, ckpt_path)
        stats = Stats.from_state_dict(state["stats"])
    else:
        stats = Stats.compute(data_mod.iter_clips(cfg.shards, "train", ("exp", "pose", "valid")),
                              streams=("exp", "pose"))
        scale = latent_scale(ae, cfg.shards, maker, d.device)
    cache = None
    if cfg.motion:
        cache_path = Path(cfg.out) / MOTION_CACHE
        if cache_path.is_file():
            cache = dict(np.load(cache_path))
        else:
            splits = ("train",) + ((cfg.val_split,) if cfg.val_split else ())
            cache = predicted_motion(cfg.motion, cfg.shards, splits, cfg.motion_steps, d.device,
                                     cfg.seed, progress and d.main)
            if d.main:
                tmp = cache_path.with_name(f".{cache_path.name}.tmp.npz")
                np.savez(tmp, **cache)
                tmp.replace(cache_path)
    unet_config = dataclasses.replace(PRESETS[cfg.preset], cond=cfg.cond,
                                      latent_channels=ae.latent_channels)
    net = FrameUNet(unet_config, info.exp_dim + 6).to(d.device)
    ema = trainer.EMA(net, cfg.ema_decay)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    diffusion = Diffusion(DiffusionConfig(steps=cfg.diffusion_steps))
    gen = trainer.noise_generator(cfg.seed, d.rank)
    if state:
        net.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
    step = trainer.restore_rngs(state, gen)
    model = trainer.wrap_ddp(net, d)
    stream = data_mod.StreamConfig(batch_size=cfg.batch_size, workers=cfg.workers,
                                   epoch_batches=cfg.epoch_batches, shuffle_buffer=4 * cfg.batch_size)
    batches = data_mod.batches_from(urls, stream, maker.fields(), cfg.seed, step, d.rank,
                                    d.world, make_items=maker)

    def loss_of(unet, batch, g) -> torch.Tensor:
        j0, x = latents(batch, ae, cached, d.device, scale)
        cond = motion_condition(batch, stats, cache).to(d.device)
        t = diffusion.sample_t(len(j0), generator=g).to(d.device)
        noise = torch.randn(j0.shape, generator=g).to(d.device)
        return diffusion.loss(lambda j_t, t_: unet(j_t, t_, cond, x), j0, t=t, noise=noise)["loss"]

    @torch.no_grad()
    def validate() -> dict:
        g = torch.Generator().manual_seed(cfg.seed + 2)
        return {"loss": float(np.mean([float(loss_of(ema.model, b, g)) for b in val]))}

    def checkpoint() -> None:
        if d.main:
            trainer.save_checkpoint(Path(cfg.out) / trainer.CHECKPOINT, {
                "kind": "frames", "world": d.world, "config": config,
                "git_revision": git_revision(), "step": step, "dataset": dataclasses.asdict(info),
                "stats": stats.state_dict(), "autoencoder": ae.fingerprint(),
                "autoencoder_path": str(cfg.autoencoder), "latent_cache": cached,
                "latent_scale": scale,
                "unet_config": dataclasses.asdict(unet_config), "motion_dim": info.exp_dim + 6,
                "diffusion": dataclasses.asdict(diffusion.config), "model": net.state_dict(),
                "ema": ema.model.state_dict(), "optimizer": opt.state_dict(),
                "generator": gen.get_state(), "rng": trainer.rng_state()})
        trainer.barrier(d)

    loop = trainer.RunLoop(cfg, d, step, state is not None, "frames", progress, validate,
                           checkpoint)
    while step < cfg.steps:
        batch = next(batches)
        with trainer.autocast(d.device):
            loss = loss_of(model, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(net, step)
        step += 1
        loop.step_done(step, {"loss": float(loss.detach())})
    return loop.finish(step)
