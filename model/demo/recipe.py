"""The bundled demo's training recipe, in one place: `fd2talk-train demo` (what `install.sh`
runs) and the end-to-end test train with exactly these settings.

On the prepared demo (`fd2talk-prep run WORK --demo`) it trains, on the CPU in about ten
minutes on 2 cores, with the tiny presets and 64-px frames:

1. the lip expert, then the Exp/Pose Transformers with L_sync (stage 1), and the same again
   twice, each without one half of the training clips (`--fold K/2`);
2. the autoencoder from scratch with colour looks (`--jitter`: a from-scratch autoencoder on
   seven videos otherwise pulls a new video's colours towards theirs);
3. the frame UNet on stage-1 *predictions* (the paper's choice: it then learns to render the
   motion it will be given), with colour jitter shared by reference and target (so it takes
   the colours from the reference), and three departures that make two people enough to learn
   to keep the reference's person: the reference latent also enters at the UNet's input
   (`ref_input`), the pose is relative to the reference's (`relative_pose`: where a head sits
   would otherwise tell the two people apart), and each item's reference is a random frame of
   its clip (`ref_frame="random"`: many reference/target pairs, mouths open and shut); and a
   fourth, cross-fitting (`motion_folds`): each training clip's expression is the one the fold
   model that never heard it predicts. Stage 1 knows its seven training clips by heart, while
   for new speech it opens both people's mouths alike (it hears the speech, not the person;
   MediaPipe reads the astronaut's jaw drop as a smaller jawOpen than Grace Hopper's), so
   without it the UNet never learns to render the astronaut's mouth from such a prediction:
   it opened it wider than she ever does, blurred it, and MediaPipe lost her face;

and exports both stages as one model folder. Each run resumes from its checkpoint when it has
one, so a killed install goes on where it stopped; a run an older recipe made is trained
again. ARCHITECTURE.md has the measurements behind every number here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fd2talk.core.defaults import defaults
from fd2talk.model import configs as C

LIPSYNC = dict(steps=600, batch_size=16, val_every=200)
MOTION = dict(steps=600, batch_size=16, lr=1e-3, val_every=200)
AUTOENCODER = dict(
    steps=1500, batch_size=8, lr=1e-3, lambda_per=0, image_size=64, jitter=0.15, val_every=500
)
FRAMES = dict(
    steps=1500,
    batch_size=16,
    lr=1e-3,
    image_size=64,
    jitter=0.2,
    val_every=500,
    ref_input=True,
    relative_pose=True,
    ref_frame=C.RefFrame.random.value,
)
FOLDS = 2  # stage-1 fold models for the frame UNet's cross-fitted expression


def _stale(cfg) -> bool:
    """Whether cfg.out holds a run made with other settings (an older recipe's): the resume
    check's own comparison, on config.json (tuples recorded as lists)."""
    from fd2talk.core.errors import UserError
    from fd2talk.model.configs import RESUMABLE
    from fd2talk.model.store.checkpoint import check_resumable, config_dict
    from fd2talk.model.training.run import RUN_CONFIG

    path = Path(cfg.out) / RUN_CONFIG
    if not path.is_file():
        return False

    def as_json(d: dict) -> dict:
        return json.loads(json.dumps(d))

    try:
        check_resumable(
            json.loads(path.read_text())["config"],
            as_json(config_dict(cfg)),
            RESUMABLE,
            path,
            as_json(defaults(type(cfg))),
        )
    except UserError:
        return True
    return False


def _train(name: str, cfg, progress: bool, restart: bool) -> bool:
    """Train (or resume) one run of the recipe; a run an older recipe made, or any run after
    one whose weights changed (`restart`), starts again. Returns whether later runs must:
    whether this run trained a step (anew, or resumed to more steps than it had)."""
    from fd2talk.model.store.checkpoint import CHECKPOINT, load_checkpoint
    from fd2talk.model.training.autoencoder import train_autoencoder
    from fd2talk.model.training.frames import train_frames
    from fd2talk.model.training.lipsync import train_lipsync
    from fd2talk.model.training.motion import train_motion

    fn = {
        "lipsync": train_lipsync,
        "motion": train_motion,
        "autoencoder": train_autoencoder,
        "frames": train_frames,
    }[name]
    out = Path(cfg.out)
    if out.is_dir() and (restart or _stale(cfg)):
        print(
            f"== demo: {out} was made by an older recipe or from older runs: training it again",
            flush=True,
        )
        shutil.rmtree(out)
        restart = True
    ckpt = out / CHECKPOINT

    def step() -> int | None:
        return int(load_checkpoint(ckpt)["step"]) if ckpt.is_file() else None

    before = step()
    if progress:
        print(
            f"== demo: {name}{' (resuming)' if before is not None else ''} -> {cfg.out}", flush=True
        )
    fn(cfg, resume=before is not None, progress=progress)
    return restart or step() != before


def train_demo(
    work: str | Path, runs: str | Path, model: str | Path, progress: bool = True, seed: int = 0
) -> Path:
    """Train both stages on the prepared demo in `work`; runs under `runs`, the model folder
    at `model` (returned). `seed`: every run's seed (bench/demo_quality.py varies it)."""
    from fd2talk.model.store.folder import export

    # absolute paths, as the CLI records them, so a run started either way resumes either way
    shards, runs = str(Path(work).resolve() / "shards"), Path(runs).resolve()
    common = {"seed": seed}
    out = {k: str(runs / k) for k in ("lipsync", "motion", "autoencoder", "frames")}
    folds = [str(runs / f"motion_fold{k}") for k in range(FOLDS)]
    motion_runs = [(out["motion"], None)] + [(f, f"{k}/{FOLDS}") for k, f in enumerate(folds)]
    configs = [
        ("lipsync", C.LipsyncTrainConfig(shards=shards, out=out["lipsync"], **LIPSYNC, **common)),
        *[
            (
                "motion",
                C.MotionTrainConfig(
                    shards=shards,
                    out=path,
                    lip_expert=out["lipsync"],
                    fold=fold,
                    **MOTION,
                    **common,
                ),
            )
            for path, fold in motion_runs
        ],
        (
            "autoencoder",
            C.AutoencoderTrainConfig(
                shards=shards, out=out["autoencoder"], **AUTOENCODER, **common
            ),
        ),
        (
            "frames",
            C.FramesTrainConfig(
                shards=shards,
                out=out["frames"],
                autoencoder=str(runs / "autoencoder" / "autoencoder"),
                motion=out["motion"],
                motion_folds=tuple(folds),
                **FRAMES,
                **common,
            ),
        ),
    ]
    restart = False
    for name, cfg in configs:
        restart = _train(name, cfg, progress, restart)
    return export([out["motion"], out["frames"]], model)
