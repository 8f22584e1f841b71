"""Stage 2's motion condition: the frame that is drawn, described by its ground-truth motion
or by a stage-1 model's prediction from the clip's audio (sampled once per run, split over the
ranks under DDP, and cached in the run directory with a record of what made it), optionally
with each training clip's expression from the cross-fitted stage-1 fold model that never saw
it (`fd2talk-train frames --motion-fold`)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from fd2talk.core.errors import UserError
from fd2talk.core.schema import POSE_DIM
from fd2talk.model.configs import FramesTrainConfig
from fd2talk.model.data import loader as data_mod
from fd2talk.model.data.folds import fold_keys, parse_fold
from fd2talk.model.data.normalize import Stats
from fd2talk.model.training.distributed import Dist, barrier, gather
from fd2talk.model.training.run import Run

MOTION_CACHE = "predicted_motion.npz"
CACHE_META = "fd2talk.meta"  # the cache's record of what made it (no clip key has a dot)


def motion_cache_meta(
    part,
    source: str,
    shards: str,
    splits: tuple[str, ...],
    steps: int,
    seed: int,
    info: data_mod.DatasetInfo,
) -> dict:
    """What a predicted-motion cache must have been made with to be reused: the stage-1
    model's fingerprint (config and weights), the sampler, its steps and seed, the shards and
    splits. A stage-1 model (`part`, read from `source`) made for other shards (coefficients,
    audio features) is refused."""
    import hashlib

    from fd2talk.model.generation.motion import Stitch
    from fd2talk.model.store import folder as pretrained

    data_mod.check_same_kind(part.config["dataset"], info, f"the stage-1 model {source}")
    manifest = Path(shards) / data_mod.MANIFEST
    return {
        "motion": pretrained.fingerprint(part),
        "sampler": Stitch.joint.value,
        "steps": steps,
        "seed": seed,
        "splits": list(splits),
        "shards": hashlib.sha256(manifest.read_bytes()).hexdigest(),
    }


def read_motion_cache(path: Path, meta: dict) -> dict[str, np.ndarray] | None:
    """The cached predictions when they were made with `meta`; None (with a note why) when not."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            saved = json.loads(str(z[CACHE_META])) if CACHE_META in z.files else {}
            if saved == meta:
                return {k: z[k] for k in z.files if k != CACHE_META}
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError):
        saved = {"unreadable": True}
    changed = ", ".join(k for k in meta if saved.get(k) != meta[k])
    print(
        f"{path} was made with another {changed}: sampling the stage-1 motion again",
        file=sys.stderr,
    )
    return None


def predicted_motion(
    model,
    shards: str,
    splits: tuple[str, ...],
    steps: int,
    seed: int,
    d: Dist,
    progress: bool = True,
    keys=None,
) -> dict[str, np.ndarray]:
    """{key: (F, D_exp + 6) raw [beta, p]} sampled by the stage-1 `MotionModel` from each
    clip's audio (only the clips in `keys`, when given); under DDP each rank samples every
    world-th clip and all ranks receive the whole dict."""
    from tqdm import tqdm

    from fd2talk.model.generation import motion as motion_mod

    out = {}
    clips = [
        c
        for split in splits
        for c in data_mod.iter_clips(shards, split)
        if keys is None or c["key"] in keys
    ][d.rank :: d.world]
    for clip in tqdm(clips, desc="stage-1 motion", leave=False, disable=not progress):
        m = motion_mod.sample(model, clip["audio"], steps=steps, seed=seed)
        out[clip["key"]] = np.concatenate([m["exp"], m["pose"]], 1).astype(np.float32)
    return {k: v for share in gather(d, out) for k, v in share.items()}


def fold_parts(sources: tuple[str, ...], shards: str) -> list:
    """The stage-1 fold models of `frames --motion-fold` (`motion --fold K/N` runs), checked:
    one per fold K of the same N, each leaving out the clips its fold holds in these shards."""
    from fd2talk.model.store import folder as pretrained

    folds = {}
    for source in sources:
        part = pretrained.require(pretrained.load_parts([source]), "motion", [source])
        fold = part.config.get("fold")
        if fold is None:
            raise UserError(
                f"--motion-fold {source} was not trained with `fd2talk-train motion "
                "--fold K/N`: pass the fold runs, one per K"
            )
        k, n = parse_fold(fold["fold"])
        if k in folds or (folds and n != len(sources)):
            raise UserError(
                f"--motion-fold: {', '.join(sources)} are not the N runs of one "
                f"--fold K/N split, K = 0..N-1 (got {fold['fold']})"
            )
        if fold["held_out"] != fold_keys(shards, k, n):
            raise UserError(
                f"--motion-fold {source} left out other clips than fold {k}/{n} of "
                f"{shards} holds: train the fold runs on these shards"
            )
        folds[k] = part
    if sorted(folds) != list(range(len(sources))) or len(sources) < 2:
        raise UserError(
            f"--motion-fold needs one run per fold K = 0..N-1 of one --fold K/N "
            f"split (got {len(sources)})"
        )
    return [folds[k] for k in range(len(sources))]


def motion_cache(
    cfg: FramesTrainConfig,
    run: Run,
    part,
    meta: dict | None,
    progress: bool,
    folds: list | None = None,
) -> dict[str, np.ndarray] | None:
    """The stage-1 predictions training conditions on (None: ground truth), by the stage-1
    `part`, with each training clip's expression by the fold model of `folds` that left it
    out (when given). Kept in the run directory with what made them (`meta`), and sampled
    again when any of that changed."""
    if meta is None:
        return None
    d, path = run.d, Path(cfg.out) / MOTION_CACHE
    cache = read_motion_cache(path, meta)
    if cache is None:
        splits = tuple(meta["splits"])
        from fd2talk.model.generation.motion import from_part

        with torch.random.fork_rng(devices=[]):  # the run is the same with or without a cache
            cache = predicted_motion(
                from_part(part, d.device),
                cfg.shards,
                splits,
                cfg.motion_steps,
                cfg.seed,
                d,
                progress and d.main,
            )
            for fold in folds or []:
                held = set(fold.config["fold"]["held_out"])
                out = predicted_motion(
                    from_part(fold, d.device),
                    cfg.shards,
                    ("train",),
                    cfg.motion_steps,
                    cfg.seed,
                    d,
                    progress and d.main,
                    held,
                )
                for key, row in out.items():  # its expression, the full model's pose
                    pose = cache[key][:, -POSE_DIM:]
                    cache[key] = np.concatenate([row[:, :-POSE_DIM], pose], 1)
        run.open()  # every check has passed: the run directory may be written now
        if d.main:
            tmp = path.with_name(f".{path.name}.tmp.npz")
            np.savez(tmp, **{CACHE_META: np.array(json.dumps(meta))}, **cache)
            tmp.replace(path)
        barrier(d)
    return cache


def motion_condition(
    batch: dict, stats: Stats, cache: dict | None, relative_pose: bool = False
) -> torch.Tensor:
    """(N, D_exp + 6) normalised [beta, p]: ground truth, or the stage-1 predictions; with
    `relative_pose`, p minus the reference frame's true pose (`frames.condition`). A
    video-only clip (no speech to predict from) has no prediction: its truth stands in."""
    if cache is None:
        exp, pose = batch["exp"], batch["pose"]
    else:
        d = stats.dim("exp")
        exp, pose = batch["exp"].clone(), batch["pose"].clone()
        speech = batch.get("speech")
        for j, (k, i) in enumerate(zip(batch["key"], batch["index"].tolist(), strict=True)):
            if speech is not None and not bool(speech[j]):
                continue  # a video-only clip: no prediction, its truth stands in
            row = torch.from_numpy(cache[k][i])  # a clip with speech must be in the cache
            exp[j], pose[j] = row[:d], row[d:]
    from fd2talk.model.generation.frames import condition

    return condition(stats, exp, pose, batch["ref_pose"] if relative_pose else None)
