"""`fd2talk-train motion`: the Exp and Pose Transformers of stage 1 (paper sections 3.2, 3.4.1).

One command trains both networks on the same batches, each with its own optimizer and EMA:

    L_first = lambda_exp L_exp + lambda_pose L_pose + lambda_sync L_sync

L_exp, L_pose: the x0-prediction loss of `Diffusion.loss` on normalised coefficients, masked by
the valid frames. L_sync: the frozen lip expert (`sync_critic.SyncCritic`) on the Exp
Transformer's predicted x0 (denormalised), so it shapes expression only.

Reads top-down: run (distributed set-up, resume checks) -> data and statistics -> models, EMA,
optimizers -> the loop (step, EMA update, log, validate, checkpoint; then the model folder).
Resume is bit-for-bit on CPU: the checkpoint holds every state the loop reads (models, EMAs,
optimizers, step, the noise generator, global RNGs), and the data stream of a step is a pure
function of (seed, step).
"""

from __future__ import annotations

import dataclasses

import torch

from fd2talk.core.device import autocast
from fd2talk.core.schema import POSE_DIM
from fd2talk.model.configs import MotionTrainConfig
from fd2talk.model.data import loader as data_mod
from fd2talk.model.data.folds import fold_keys, parse_fold
from fd2talk.model.data.normalize import Stats
from fd2talk.model.data.windows import HoldOut, RandomWindows
from fd2talk.model.diffusion import Diffusion, DiffusionConfig
from fd2talk.model.nets.motion_dit import PRESETS, MotionDiT
from fd2talk.model.training.distributed import no_sync, wrap_ddp
from fd2talk.model.training.ema import EMA
from fd2talk.model.training.metrics import Mean
from fd2talk.model.training.rng import noise_generator
from fd2talk.model.training.run import Parts, start_run

STREAMS = {"exp": "exp", "pose": "pose", "joint": "joint"}  # network name -> data it denoises


def build_models(
    preset: str, k: int | None, exp_dim: int, audio_dim: int, single: bool = False
) -> dict[str, MotionDiT]:
    """The Exp and Pose Transformers, or (`single`, the paper's ablation) one "joint"
    transformer denoising [beta, p] (D_exp + 6)."""
    config = dataclasses.replace(PRESETS[preset], k=k)
    if single:
        return {"joint": MotionDiT(config, exp_dim + POSE_DIM, audio_dim)}
    return {
        "exp": MotionDiT(config, exp_dim, audio_dim),
        "pose": MotionDiT(config, POSE_DIM, audio_dim),
    }


def normalised(batch: dict, stats: Stats, device: str) -> dict:
    """Normalised exp/pose/audio (N, F, D), their concatenation "joint", and the valid-frame
    weight (N, F, 1) on `device`."""
    out = {k: stats.normalize(k, batch[k]).to(device) for k in ("exp", "pose", "audio")}
    out["joint"] = torch.cat([out["exp"], out["pose"]], -1)
    out["weight"] = batch["valid"].to(device)[..., None].float()
    out["id"] = batch["id"].to(device)  # (N, D_id) identity alpha, raw
    return out


def losses(nets: dict, diffusion: Diffusion, b: dict, gen: torch.Generator) -> dict:
    """Diffusion.loss per network; t and noise from `gen` (N, F, D) on the batch's device."""
    out = {}
    for name, net in nets.items():  # (exp first, pose second: the generator's order matters)
        x0 = b[STREAMS[name]]
        t = diffusion.sample_t(len(x0), generator=gen).to(x0.device)
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        out[name] = diffusion.loss(
            lambda x_t, t_, net=net: net(x_t, t_, b["audio"]),
            x0,
            t=t,
            noise=noise,
            weight=b["weight"],
        )
    return out


@torch.no_grad()
def validate(
    nets: dict, diffusion: Diffusion, stats: Stats, val: list[dict], device: str, seed: int
) -> dict:
    """Mean x0 loss per network over fixed validation windows with fixed t and noise."""
    gen = torch.Generator().manual_seed(seed)
    totals = {f"loss_{name}": 0.0 for name in nets}
    for batch in val:
        for name, out in losses(nets, diffusion, normalised(batch, stats, device), gen).items():
            totals[f"loss_{name}"] += float(out["loss"]) / len(val)
    return totals


def dims_problem(info: data_mod.DatasetInfo, dims: dict) -> str | None:
    """Why a checkpoint of `dims` cannot train on shards described by `info` (None: it can)."""
    if (dims["exp"], dims["audio"]) != (info.exp_dim, info.audio_dim):
        return (
            f"trained on exp dim {dims['exp']} and audio dim {dims['audio']} but the shards "
            f"have {info.exp_dim} ({info.coeffs}) and {info.audio_dim} "
            f"({info.audio_features}): use shards made with the same coefficient and audio "
            "backends, or start a new run"
        )
    return None


def train_motion(cfg: MotionTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train the Exp and Pose Transformers; returns the last validation losses."""
    from fd2talk.model.training.sync_critic import load_sync_critic

    run = start_run(cfg, "motion", resume, PRESETS)
    d = run.d
    # data and statistics
    info = data_mod.dataset_info(cfg.shards, "train")
    urls = data_mod.split_shards(cfg.shards, "train")
    held = fold_keys(cfg.shards, *parse_fold(cfg.fold)) if cfg.fold else []
    if run.state:
        run.refuse(dims_problem(info, run.extras["dims"]))
        run.refuse(
            None
            if run.extras.get("fold", {}).get("held_out", []) == held
            else f"--fold {cfg.fold} now leaves out other clips than when the run started "
            "(the shards changed): start a new run"
        )
        stats = Stats.from_state_dict(run.extras["stats"])
    else:
        stats = Stats.compute(
            c for c in data_mod.iter_clips(cfg.shards, "train") if c["key"] not in held
        )
    val = []
    if cfg.val_split:
        from fd2talk.model.training.lipsync import val_batches

        val = val_batches(
            cfg.shards,
            cfg.val_split,
            data_mod.MOTION_FIELDS,
            data_mod.WINDOW,
            cfg.batch_size,
            limit=512,
        )
    critic = load_sync_critic(cfg.lip_expert, info, d.device) if cfg.lambda_sync > 0 else None
    # models, EMA, optimizers
    nets = {
        k: m.to(d.device)
        for k, m in build_models(
            cfg.preset, cfg.k, info.exp_dim, info.audio_dim, cfg.single_dit
        ).items()
    }
    diffusion = Diffusion(DiffusionConfig(steps=cfg.diffusion_steps))
    opts = {k: torch.optim.Adam(m.parameters(), lr=cfg.lr) for k, m in nets.items()}
    emas = {k: EMA(m, cfg.ema_decay) for k, m in nets.items()}
    gen = noise_generator(cfg.seed, d.rank)  # diffusion timesteps and noise
    parts = Parts(nets, opts, emas, gen)
    step = run.restore(parts)
    ddp = {k: wrap_ddp(m, d) for k, m in nets.items()}
    stream = data_mod.StreamConfig(
        batch_size=cfg.batch_size, workers=cfg.workers, epoch_batches=cfg.epoch_batches
    )
    windows = HoldOut(RandomWindows(stream.window, stream.min_valid), held)
    batches = data_mod.batches_from(
        urls,
        stream,
        data_mod.MOTION_FIELDS,
        cfg.seed,
        step * cfg.accumulate,
        d.rank,
        d.world,
        make_items=windows,
    )
    weights = {"exp": cfg.lambda_exp, "pose": cfg.lambda_pose, "joint": cfg.lambda_exp}
    extras = {
        "dataset": dataclasses.asdict(info),
        "stats": stats.state_dict(),
        "audio_config": data_mod.audio_stage_config(cfg.shards),
        "dims": {"exp": info.exp_dim, "pose": POSE_DIM, "audio": info.audio_dim},
        "model_config": dataclasses.asdict(next(iter(nets.values())).config),
        "single_dit": cfg.single_dit,
        **({"fold": {"fold": cfg.fold, "held_out": held}} if cfg.fold else {}),
        "diffusion": dataclasses.asdict(diffusion.config),
    }

    def validate_ema() -> dict:  # the EMA weights, what generation samples with
        return validate(
            {k: e.model for k, e in emas.items()}, diffusion, stats, val, d.device, cfg.seed + 1
        )

    run.begin(step)
    metrics = {}
    if cfg.val_split and step == 0:  # the untrained baseline
        metrics = run.log_val(step, validate_ema())
    run.start_progress(step, progress)
    while step < cfg.steps:
        # one optimizer step per network on the mean gradient of cfg.accumulate micro-batches
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        train = Mean(cfg.accumulate)
        for i in range(cfg.accumulate):
            with no_sync(list(ddp.values()), i < cfg.accumulate - 1):  # DDP: on the last
                b = normalised(next(batches), stats, d.device)
                with autocast(d.device, "bf16", cuda_only=True):
                    out = losses(ddp, diffusion, b, gen)
                    loss = sum(weights[k] * out[k]["loss"] for k in nets)  # L_first
                    terms = {f"loss_{k}": float(out[k]["loss"].detach()) for k in nets}
                    if critic is not None:
                        x0 = out["joint" if cfg.single_dit else "exp"]["x0_hat"].float()
                        beta = stats.denormalize("exp", x0[..., : info.exp_dim])
                        raw_audio = stats.denormalize("audio", b["audio"])
                        sync = critic(beta, b["id"], raw_audio, b["weight"][..., 0] > 0)
                        loss = loss + cfg.lambda_sync * sync
                        terms["loss_sync"] = float(sync.detach())
                (loss / cfg.accumulate).backward()
            train.add(loss, terms)
        for k, m in nets.items():
            torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)
            opts[k].step()
            emas[k].update(m, step)
        step += 1

        run.bar.update(1)
        if run.should_log(step):
            run.log_train(step, train.values)
        if run.should_validate(step):
            metrics = run.log_val(step, validate_ema())
        if run.should_save(step):
            run.save(step, parts, extras)
    if run.saved != step:  # --steps 0: the untrained model
        run.save(step, parts, extras)
    run.finish()  # RUN/model from the last checkpoint (the EMA weights)
    return metrics
