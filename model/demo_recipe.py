"""The bundled demo's training recipe, in one place: `fd2talk-train demo` (what `install.sh`
runs) and the end-to-end test train with exactly these settings.

On the prepared demo (`fd2talk-prep run WORK --demo`) it trains, on the CPU in about ten
minutes on 2 cores, with the tiny presets and 64-px frames:

1. the lip expert, then the Exp/Pose Transformers with L_sync (stage 1);
2. the autoencoder from scratch with colour looks (`--jitter`: a from-scratch autoencoder on
   seven videos otherwise pulls a new video's colours towards theirs);
3. the frame UNet on stage-1 *predictions* (the paper's choice: it then learns to render the
   motion it will be given), with colour jitter shared by reference and target (so it takes
   the colours from the reference), and three departures that make two people enough to learn
   to keep the reference's person: the reference latent also enters at the UNet's input
   (`ref_input`), the pose is relative to the reference's (`relative_pose`: where a head sits
   would otherwise tell the two people apart), and each item's reference is a random frame of
   its clip (`ref_frame="random"`: many reference/target pairs, mouths open and shut);

and exports both stages as one model folder. Each run resumes from its checkpoint when it has
one, so a killed install goes on where it stopped. ARCHITECTURE.md has the measurements
behind every number here.
"""

from __future__ import annotations

from pathlib import Path

from . import configs as C

LIPSYNC = dict(steps=600, batch_size=16, val_every=200)
MOTION = dict(steps=600, batch_size=16, lr=1e-3, val_every=200)
AUTOENCODER = dict(steps=1500, batch_size=8, lr=1e-3, lambda_per=0, image_size=64, jitter=0.15,
                   val_every=500)
FRAMES = dict(steps=1500, batch_size=16, lr=1e-3, image_size=64, jitter=0.2, val_every=500,
              ref_input=True, relative_pose=True, ref_frame="random")


def _train(name: str, cfg, progress: bool) -> None:
    from . import train_autoencoder, train_frames, train_lipsync, train_motion

    fn = {"lipsync": train_lipsync.train_lipsync, "motion": train_motion.train_motion,
          "autoencoder": train_autoencoder.train_autoencoder,
          "frames": train_frames.train_frames}[name]
    resume = (Path(cfg.out) / "checkpoint.pt").is_file()
    if progress:
        print(f"== demo: {name}{' (resuming)' if resume else ''} -> {cfg.out}", flush=True)
    fn(cfg, resume=resume, progress=progress)


def train_demo(work: str | Path, runs: str | Path, model: str | Path,
               progress: bool = True, seed: int = 0) -> Path:
    """Train both stages on the prepared demo in `work`; runs under `runs`, the model folder
    at `model` (returned). `seed`: every run's seed (bench/demo_quality.py varies it)."""
    from .pretrained import export

    # absolute paths, as the CLI records them, so a run started either way resumes either way
    shards, runs = str(Path(work).resolve() / "shards"), Path(runs).resolve()
    common = {"seed": seed}
    out = {k: str(runs / k) for k in ("lipsync", "motion", "autoencoder", "frames")}
    _train("lipsync", C.LipsyncTrainConfig(shards=shards, out=out["lipsync"], **LIPSYNC, **common),
           progress)
    _train("motion", C.MotionTrainConfig(shards=shards, out=out["motion"],
                                         lip_expert=out["lipsync"], **MOTION, **common), progress)
    _train("autoencoder", C.AutoencoderTrainConfig(shards=shards, out=out["autoencoder"],
                                                   **AUTOENCODER, **common), progress)
    _train("frames", C.FramesTrainConfig(shards=shards, out=out["frames"],
                                         autoencoder=str(runs / "autoencoder" / "autoencoder"),
                                         motion=out["motion"], **FRAMES, **common), progress)
    return export([out["motion"], out["frames"]], model)
