"""The stage runner: maps a per-clip stage over its inputs with a distributor.

A stage (see `work.Stage`) enumerates its work items and processes one at a time,
raising `Skip` for bad input. The runner

- takes a deterministic `--part i/n` slice (crc32 of the key, so every machine of
  a SLURM array agrees on the slice without a coordinator),
- skips items that already have a status file (a re-run or a resumed run),
- runs the rest with a distributor (`distribute`): in-process (`workers=1`), in a
  spawn-started process pool, or as Ray tasks on a Ray cluster (`cluster`: dynamic
  scheduling over many machines, a task whose worker or node dies retried by Ray on
  another; the same status files, outputs and summary),
- writes one status file per item *after* its outputs (so a kill -9 at any
  point only repeats the items in flight; outputs are renamed into place whole),
- catches `Skip` (recorded with its reason) and unexpected exceptions (recorded
  with the traceback, counted as failed: the only case that makes the command
  exit non-zero),
- rewrites `status/<stage>/failures.jsonl` and `summary.json`, prints a summary.

The pieces: `work` (Item, Stage, Part), `status` (the records), `settings` (config drift),
`worker` (one item), `distribute` and `ray_cluster` (the distributors), `summary`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fd2talk.core import atomic
from fd2talk.pipeline.runner import worker
from fd2talk.pipeline.runner.distribute import Distributor, InProcess, ProcessPool
from fd2talk.pipeline.runner.ray_cluster import RayCluster
from fd2talk.pipeline.runner.settings import check_config
from fd2talk.pipeline.runner.status import is_pending, read_status, status_dir, write_failures
from fd2talk.pipeline.runner.summary import Summary
from fd2talk.pipeline.runner.work import Part, Stage


def distributor_for(
    workers: int, pending: int, cluster: str | None = None, cluster_gpus: float = 0.0
) -> Distributor:
    """The distributor for `workers`, `cluster` and `cluster_gpus` (see `run_stage`) with
    `pending` items to run: Ray tasks with a cluster (and something to run), else this
    process for one worker or one item, else a process pool."""
    if cluster is not None and pending:
        return RayCluster(cluster, workers, cluster_gpus)
    if workers <= 1 or pending <= 1:
        return InProcess()
    return ProcessPool(workers)


def run_stage(
    stage: Stage,
    work: Path,
    workers: int = 1,
    part: Part = Part(),
    force: bool = False,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    cluster: str | None = None,
    cluster_gpus: float = 0.0,
    distributor: Distributor | None = None,
) -> Summary:
    """Process every pending item of `stage` in `work`; return the summary (also written).
    `cluster`: run the items as Ray tasks: "local" starts a Ray cluster on this machine with
    `workers` CPUs, "auto" joins the one running here (`ray start`), any other value is a Ray
    address (e.g. ray://head:10001). The work dir must be shared storage all nodes see.
    `cluster_gpus`: the share of a GPU each task asks for (0.25: four tasks a GPU), for the
    backends that run on CUDA (S3FD, Deep3D, wav2vec2). `distributor`: run the pending items
    with this one instead of the one `distributor_for` picks from those options."""
    from tqdm import tqdm

    work = Path(work)
    t0 = time.perf_counter()
    all_items = stage.items(work)  # validates the inputs (a bad manifest stops here)
    check_config(stage, work, force)
    (work / stage.out_dir).mkdir(parents=True, exist_ok=True)
    if part.whole:
        atomic.clean_tmp(work / stage.out_dir)
    items = [it for it in all_items if part.owns(it.group or it.key)]
    summary = Summary(stage.name, total=len(items))
    pending = [it for it in items if is_pending(read_status(work, stage.name, it.key), it)]
    summary.already = len(items) - len(pending)
    failed: list[dict] = []

    def account(rec: dict) -> None:
        if rec["status"] == "done":
            summary.done += 1
        elif rec["status"] == "skipped":
            summary.skipped[rec["reason"]] += 1
        else:
            summary.failed += 1
            failed.append(rec)
        if on_result:
            on_result(rec)

    if distributor is None:
        distributor = distributor_for(workers, len(pending), cluster, cluster_gpus)
    bar = tqdm(
        total=len(pending),
        desc=f"{stage.name}",
        unit="clip",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        distributor.map(stage, pending, work, account, lambda: bar.update(1))
    finally:
        bar.close()
        worker.close(stage)
    summary.failures = write_failures(work, stage.name, failed)
    summary.seconds = round(time.perf_counter() - t0, 2)
    if part.whole:
        atomic.write_json(status_dir(work, stage.name) / "summary.json", summary.to_dict())
    return summary
