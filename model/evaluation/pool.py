"""Scoring many videos (`score_video` on each), in this process or in worker processes.

With `workers` > 1 the videos are scored in that many processes, started by spawning (no
forked torch or MediaPipe threads), each with its own networks on the CPU and one thread;
the rows come back in the order of the videos, and the metrics do not change.
"""

from __future__ import annotations

import time
from pathlib import Path

from fd2talk.model.evaluation.scoring import score_video
from fd2talk.model.evaluation.tools import Tools

_WORKER_TOOLS: Tools | None = None


def _worker_init(paths: dict, face_model: str | None) -> None:
    global _WORKER_TOOLS
    import torch

    torch.set_num_threads(1)  # the workers share the cores
    _WORKER_TOOLS = Tools.load(
        paths["syncnet"], face_model, "cpu", paths["hopenet"], paths["inception"]
    )


def _worker_score(job: tuple) -> dict:
    name, gen, ref, coeffs = job
    return {"name": name, **score_video(gen, ref, _WORKER_TOOLS, coeffs)}


def score_videos(
    pairs: list[tuple[str, Path, Path | None]],
    tools: Tools,
    progress: bool = True,
    workers: int = 1,
    coeffs: dict[str, Path | None] | None = None,
) -> tuple[list[dict], float]:
    """Rows (one per video, with its name, in the order of `pairs`) and the seconds they took.
    workers > 1: videos are scored in that many processes (each loads its own networks, on
    the CPU); the metrics are the same. coeffs: a motion .npz per name, None for a video
    without one (a name not in it: NAME.npz beside the generated video)."""
    from tqdm import tqdm

    coeffs = coeffs or {}
    jobs = [(name, gen, ref, coeffs.get(name, gen.with_suffix(".npz"))) for name, gen, ref in pairs]
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="scoring", unit="video", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        rows = []
        for name, gen, ref, npz in jobs:
            rows.append({"name": name, **score_video(gen, ref, tools, npz)})
            bar.update()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no forked torch or MediaPipe threads
        with ProcessPoolExecutor(
            min(workers, len(jobs)),
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(tools.paths, tools.face_model),
        ) as pool:
            rows = []
            for row in pool.map(_worker_score, jobs):
                rows.append(row)
                bar.update()
    bar.close()
    return rows, time.perf_counter() - start
