"""`fd2talk-train lipsync`: pre-train the lip expert (paper section 3.2, "lip expert").

The expert sees mouth vertices made by the face model of eq. 1 from ground-truth expression
(`S = S_bar + B_id alpha + B_exp beta`, mouth subset), exactly what it will see from predicted
expression when it is frozen inside `fd2talk-train motion`, and the audio features of the same
frames. It is trained SyncNet-style on in-sync windows against windows whose audio is shifted in
time (`lip_expert.make_pairs`), and reports in-sync / off-sync accuracy on the validation split.

The face model: for `deep3d` shards, the BFM mouth vertices from `BFM_model_front.mat`
(`--bfm`, the file or its folder, or $FD2TALK_BFM_DIR, the folder `fd2talk-prep coeffs` uses); for `mediapipe` shards, fitted by least squares on the training
shards' canonical mouth landmarks (`lm3d.npy`). It is stored in the expert's checkpoint.
"""

from __future__ import annotations

import dataclasses

import torch

from fd2talk.core.errors import UserError
from fd2talk.model.configs import LipsyncTrainConfig
from fd2talk.model.data import loader as data_mod
from fd2talk.model.data.normalize import Stats
from fd2talk.model.data.windows import collate, fixed_windows
from fd2talk.model.nets.face_model import FaceModel
from fd2talk.model.nets.lip_expert import PRESETS, LipExpert, expert_loss, make_pairs
from fd2talk.model.training.distributed import no_sync, wrap_ddp
from fd2talk.model.training.metrics import Mean
from fd2talk.model.training.rng import noise_generator
from fd2talk.model.training.run import Parts, start_run

SYNC_FIELDS = ("exp", "audio", "valid", "id")


def build_face_model(shards: str, info: data_mod.DatasetInfo, bfm: str | None) -> FaceModel:
    """BFM mouth model for deep3d shards; least-squares mouth model for mediapipe shards."""
    if info.coeffs == "deep3d":
        face = FaceModel.from_bfm(bfm)  # a UserError naming the file and how to get it
    else:
        fields = ("exp", "lm3d", "id", "valid")
        data_mod.dataset_info(shards, "train", fields)  # a clear error when lm3d.npy is missing
        face = FaceModel.fit_mediapipe(data_mod.iter_clips(shards, "train", fields))
    if face.exp_dim != info.exp_dim:
        raise UserError(
            f"the face model has {face.exp_dim} expression dims but the shards have "
            f"{info.exp_dim}: use the BFM that matches the coefficients"
        )
    return face


VAL_REPEATS = 16  # pairs drawn per validation window (fixed seed): small val splits still count


def _accuracy(
    expert: LipExpert, face: FaceModel, stats: Stats, batches: list[dict], device: str, seed: int
) -> dict:
    """In-sync / off-sync accuracy (threshold p = 0.5) and BCE over fixed validation pairs:
    every validation window gives VAL_REPEATS in-sync and VAL_REPEATS shifted pairs."""
    gen = torch.Generator().manual_seed(seed)
    hits = {1: [0, 0], 0: [0, 0]}
    losses = []
    with torch.no_grad():
        for b in batches:
            mouth = face(b["exp"], b["id"][:, None])  # (N, F, M, 3)
            audio = stats.normalize("audio", b["audio"])
            n = len(mouth)
            m, a, label = make_pairs(
                mouth.repeat(VAL_REPEATS, 1, 1, 1),
                audio.repeat(VAL_REPEATS, 1, 1),
                b["valid"].repeat(VAL_REPEATS, 1),
                expert.config.window,
                generator=gen,
            )
            assert len(label) == 2 * n * VAL_REPEATS
            p = expert(m.to(device), a.to(device)).cpu()
            losses.append(float(expert_loss(p, label)))
            for cls in (0, 1):
                sel = label == cls
                hits[cls][0] += int(((p > 0.5) == bool(cls))[sel].sum())
                hits[cls][1] += int(sel.sum())
    return {
        "loss": sum(losses) / max(1, len(losses)),
        "acc_in_sync": hits[1][0] / max(1, hits[1][1]),
        "acc_off_sync": hits[0][0] / max(1, hits[0][1]),
        "pairs": hits[0][1] + hits[1][1],
    }


def val_batches(
    shards: str, split: str, fields: tuple[str, ...], window: int, size: int, limit: int = 4096
) -> list[dict]:
    """The validation split cut into consecutive windows, batched (fixed, no randomness)."""
    windows = [
        w
        for clip in data_mod.iter_clips(shards, split, fields)
        for w in fixed_windows(clip, window)
    ][:limit]
    if not windows and "audio" in fields:  # else validation would silently report 0
        raise UserError(
            f"the {split!r} split of {shards} has no clip with speech to validate "
            "on (video-only sources are stage-2 data): use --val-split none or "
            "add talking videos to it"
        )
    return [collate(windows[i : i + size]) for i in range(0, len(windows), size)]


def train_lipsync(cfg: LipsyncTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train the lip expert; returns the last validation metrics."""
    run = start_run(cfg, "lipsync", resume, PRESETS)
    d = run.d
    info = data_mod.dataset_info(cfg.shards, "train", SYNC_FIELDS)
    urls = data_mod.split_shards(cfg.shards, "train")
    val = (
        val_batches(cfg.shards, cfg.val_split, SYNC_FIELDS, data_mod.WINDOW, cfg.batch_size)
        if cfg.val_split
        else []
    )
    if run.state:
        face = FaceModel.from_state(run.extras["face_model"])
        stats = Stats.from_state_dict(run.extras["stats"])
    else:
        face = build_face_model(cfg.shards, info, cfg.bfm)
        stats = Stats.compute(data_mod.iter_clips(cfg.shards, "train", SYNC_FIELDS + ("pose",)))
    expert = LipExpert(PRESETS[cfg.preset], face.n_points, info.audio_dim).to(d.device)
    opt = torch.optim.Adam(expert.parameters(), lr=cfg.lr)
    gen = noise_generator(cfg.seed, d.rank)  # make_pairs' windows and shifts
    parts = Parts({"expert": expert}, {"expert": opt}, generator=gen)
    step = run.restore(parts)
    model = wrap_ddp(expert, d)
    stream = data_mod.StreamConfig(
        batch_size=cfg.batch_size, workers=cfg.workers, epoch_batches=cfg.epoch_batches
    )
    batches = data_mod.batches_from(
        urls, stream, SYNC_FIELDS, cfg.seed, step * cfg.accumulate, d.rank, d.world
    )
    extras = {
        "dataset": dataclasses.asdict(info),
        "stats": stats.state_dict(),
        "face_model": face.to_state(),
        "expert_config": dataclasses.asdict(expert.config),
    }

    def validate() -> dict:
        expert.eval()
        metrics = _accuracy(expert, face, stats, val, d.device, cfg.seed + 1)
        expert.train()
        return metrics

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
                b = next(batches)
                mouth = face(b["exp"], b["id"][:, None])  # (N, F, M, 3)
                audio = stats.normalize("audio", b["audio"])
                m, a, label = make_pairs(
                    mouth, audio, b["valid"], expert.config.window, generator=gen
                )
                loss = expert_loss(model(m.to(d.device), a.to(d.device)), label.to(d.device))
                (loss / cfg.accumulate).backward()
            train.add(loss)
        opt.step()
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
    run.finish()  # RUN/model from the last checkpoint
    return metrics
