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

from pathlib import Path

from fd2talk.model import configs as C
from fd2talk.model.training.recipe import Recipe, train_recipe

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


DEMO = Recipe(
    "demo",
    lipsync=LIPSYNC,
    motion=MOTION,
    autoencoder=AUTOENCODER,
    frames=FRAMES,
    folds=FOLDS,
)


def train_demo(
    work: str | Path, runs: str | Path, model: str | Path, progress: bool = True, seed: int = 0
) -> Path:
    """Train both stages on the prepared demo in `work`; runs under `runs`, the model folder
    at `model` (returned). `seed`: every run's seed (bench/demo_quality.py varies it)."""
    return train_recipe(DEMO, work, runs, model, progress, seed)
