"""Distributors: what runs a stage's pending items, behind one small interface (as
video2dataset swaps its multiprocessing, pyspark and Ray distributors).

A distributor's `map(stage, items, work, account, advance)` sets the stage up where its
items run, processes every item (`worker.process_one`: outputs, then the status file), hands
each item's record to `account` as the item ends, in any order, and calls `advance()` once
per item it ran to the end (the progress bar). Two here: `InProcess` (this process, in order)
and `ProcessPool` (spawn-started worker processes, a bounded number of items in flight); the
Ray one is `ray_cluster.RayCluster`; `runner.distributor_for` picks one from the command
line's options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Protocol

from fd2talk.pipeline.runner import worker
from fd2talk.pipeline.runner.work import Item, Stage

Account = Callable[[dict], None]  # called with each item's record as it ends


class Distributor(Protocol):
    def map(
        self,
        stage: Stage,
        items: Sequence[Item],
        work: Path,
        account: Account,
        advance: Callable[[], None],
    ) -> None: ...


@dataclass(frozen=True)
class InProcess:
    """Every item in this process, in order (one worker, or at most one item)."""

    def map(
        self,
        stage: Stage,
        items: Sequence[Item],
        work: Path,
        account: Account,
        advance: Callable[[], None],
    ) -> None:
        if items:
            stage.setup()
        for it in items:
            account(worker.process_one(stage, it, work))
            advance()


@dataclass(frozen=True)
class ProcessPool:
    """`workers` spawn-started processes, each setting the stage up once, with twice as many
    items in flight; a worker that dies fails the items in flight (a re-run retries them)."""

    workers: int

    def map(
        self,
        stage: Stage,
        items: Sequence[Item],
        work: Path,
        account: Account,
        advance: Callable[[], None],
    ) -> None:
        worker.check_setup(stage)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with ProcessPoolExecutor(
            self.workers,
            mp_context=get_context("spawn"),
            initializer=worker.init_worker,
            initargs=(stage, threads),
        ) as pool:
            queue = list(reversed(items))
            running: dict = {}
            while queue or running:
                while queue and len(running) < 2 * self.workers:
                    it = queue.pop()
                    running[pool.submit(worker.worker_process, it, work)] = it
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    it = running.pop(fut)
                    try:
                        account(fut.result())
                    except BrokenProcessPool:
                        # A worker died (killed for memory, or a crash in native code):
                        # the items in flight fail; a re-run retries them.
                        for gone in [it, *running.values()]:
                            account(
                                worker.lost(
                                    stage,
                                    gone,
                                    "a worker process died while "
                                    "processing it (out of memory, or a crash "
                                    "in native code)",
                                )
                            )
                        running.clear()
                        queue.clear()
                        break
                    advance()
