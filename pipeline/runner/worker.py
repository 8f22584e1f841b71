"""One item run by a stage: its status record written after its outputs (`process_one`), and
the stage a worker process (pool or Ray) sets up once and keeps.

`process_one` catches `Skip` (recorded with its reason) and any other exception (recorded
with the traceback, counted as failed); a failed item gets no status file, so a re-run
retries it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from fd2talk.core import atomic
from fd2talk.core.skip import Skip
from fd2talk.pipeline.runner.status import status_dir
from fd2talk.pipeline.runner.work import Item, Stage

# Worker-process state: the stage object, set up once per process.
_WORKER_STAGE: Stage | None = None


def process_one(stage: Stage, item: Item, work: Path) -> dict:
    """Run one item; write its status file; return the record (status done/skipped/failed)."""
    t0 = time.perf_counter()
    rec: dict = {"key": item.key, "stage": stage.name, "inputs": item.payload}
    try:
        rec["outputs"] = stage.process(item, work)
        rec["status"] = "done"
    except Skip as skip:
        rec.update(status="skipped", **skip.record())
    except Exception as e:  # noqa: BLE001 - the runner is the one place that must not die
        rec.update(
            status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()
        )
    rec["seconds"] = round(time.perf_counter() - t0, 6)
    if rec["status"] != "failed":
        atomic.write_json(status_dir(work, stage.name) / f"{item.key}.json", rec)
    return rec


def lost(stage: Stage, item: Item, error: str) -> dict:
    """The record of an item whose worker could not return one (a dead process, a lost node)."""
    return {
        "key": item.key,
        "stage": stage.name,
        "inputs": item.payload,
        "status": "failed",
        "error": error,
        "traceback": "",
    }


def close(stage: Stage) -> None:
    """Release what `setup` loaded, for stages that have a `close`."""
    close_ = getattr(stage, "close", None)
    if close_:
        close_()


def check_setup(stage: Stage) -> None:
    """Set the stage up once here before any worker does: a missing or bad weight file is then
    one clear error, not a broken pool or a failed task per item."""
    stage.setup()
    close(stage)


def init_worker(stage: Stage, threads: int) -> None:
    """Set `stage` up in this worker process, with `threads` threads for torch and numpy."""
    global _WORKER_STAGE
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch/numpy when they load
    stage.setup()
    if "torch" in sys.modules:  # only stages that use torch pay for importing it
        sys.modules["torch"].set_num_threads(threads)
    _WORKER_STAGE = stage


def close_worker() -> None:
    """Close the stage this worker process set up, if any."""
    if _WORKER_STAGE is not None:
        close(_WORKER_STAGE)


def worker_process(item: Item, work: Path) -> dict:
    """One item with the stage `init_worker` set up in this process."""
    assert _WORKER_STAGE is not None
    return process_one(_WORKER_STAGE, item, work)
