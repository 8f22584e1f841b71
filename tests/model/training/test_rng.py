"""A run's random streams: saved and put back exactly; fresh and distinct in another world."""

import random

import numpy as np
import torch

from fd2talk.model.training import rng


def _draw(gen: torch.Generator) -> tuple:
    return (
        torch.rand(3, generator=gen).tolist(),
        torch.rand(3).tolist(),
        random.random(),
        float(np.random.rand()),
    )


def test_streams_round_trip():
    gen = rng.noise_generator(0, 1)
    saved = rng.streams(gen)
    first = _draw(gen)
    rng.restore(saved, gen)
    assert _draw(gen) == first  # every stream restarts where it was saved
    rng.set_rng_state(saved["rng"])
    assert torch.equal(torch.rand(3), torch.tensor(first[1]))
    assert rng.noise_generator(0, 1).initial_seed() == 1
    assert rng.noise_generator(2, 0).initial_seed() == 2000


def test_another_world_size_gets_fresh_streams_per_rank_and_step():
    draws = {}
    for key in ((0, 10, 0), (0, 10, 1), (0, 11, 0), (1, 10, 0)):
        gen = torch.Generator()
        rng.reseed(*key, gen)
        draws[key] = _draw(gen)
    again = torch.Generator()
    rng.reseed(0, 10, 0, again)
    assert _draw(again) == draws[(0, 10, 0)]
    assert len({str(v) for v in draws.values()}) == len(draws)
