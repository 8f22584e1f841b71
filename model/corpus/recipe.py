"""The shipped real-face model's recipe: `fd2talk-train corpus`, both stages on the corpus of
real talking-head media (`../shared/corpus`, prepared with `fd2talk-prep manifest corpus` and
`fd2talk-prep run`), split by identity so that the six dev identities are never trained on.

CPU-scale, like the demo's (model/demo/recipe.py), with 128-px frames: the tiny presets, the
autoencoder from scratch on every training clip's frames with colour looks, the frame UNet
with the reference latent at its input, relative pose and random reference frames (what a
face it has never seen needs: to copy the reference and move only what the motion says), on
stage-1 predictions cross-fitted over two folds. Each run resumes; docs/training.md has the
measurements behind the numbers.
"""

from __future__ import annotations

from pathlib import Path

from fd2talk.model import configs as C
from fd2talk.model.training.recipe import Recipe, train_recipe

IMAGE_SIZE = 128
CORPUS = Recipe(
    "corpus",
    lipsync=dict(steps=1000, batch_size=16, val_every=250),
    motion=dict(steps=1500, batch_size=16, lr=1e-3, val_every=500),
    autoencoder=dict(
        steps=2500,
        batch_size=8,
        lr=1e-3,
        lambda_per=0,
        image_size=IMAGE_SIZE,
        jitter=0.15,
        val_every=500,
    ),
    frames=dict(
        steps=4000,
        batch_size=16,
        lr=1e-3,
        image_size=IMAGE_SIZE,
        jitter=0.2,
        val_every=1000,
        ref_input=True,
        relative_pose=True,
        ref_frame=C.RefFrame.random.value,
    ),
    folds=2,
)


def train_corpus(
    work: str | Path, runs: str | Path, model: str | Path, progress: bool = True, seed: int = 0
) -> Path:
    """Train both stages on the prepared corpus in `work`; runs under `runs`, the model folder
    at `model` (returned)."""
    return train_recipe(CORPUS, work, runs, model, progress, seed)
