"""The random streams of a training run, what a bit-for-bit resume puts back (DESIGN.md
section 3): each rank's noise generator (diffusion noise and timesteps, pairs) and the global
torch / Python / NumPy / CUDA states.

A resume with the same number of processes restores every rank's own streams (`restore`); with
another number each rank starts fresh streams seeded by (seed, step, rank), distinct from every
step's before (`reseed`).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def noise_generator(seed: int, rank: int) -> torch.Generator:
    """The run's CPU generator for diffusion noise and timesteps: one stream per rank."""
    return torch.Generator().manual_seed(seed * 1000 + rank)


def rng_state() -> dict:
    """The global RNG states: torch, Python, NumPy (and CUDA when present)."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def streams(generator: torch.Generator | None) -> dict:
    """This rank's streams as a checkpoint's `ranks` entry holds them."""
    return {"generator": generator.get_state() if generator else None, "rng": rng_state()}


def restore(saved: dict, generator: torch.Generator | None) -> None:
    """Put this rank's streams (a `streams` record) back."""
    if generator is not None:
        generator.set_state(saved["generator"])
    set_rng_state(saved["rng"])


def reseed(seed: int, step: int, rank: int, generator: torch.Generator | None) -> None:
    """Fresh streams for `rank` resuming at `step` in another world size."""
    fresh = int(
        np.random.SeedSequence([int(seed), step, rank]).generate_state(1, np.uint64)[0] >> 1
    )
    if generator is not None:
        generator.manual_seed(fresh)
    torch.manual_seed(fresh)
    random.seed(fresh)
    np.random.seed(fresh % 2**32)
