"""The stage runner: maps a per-clip stage over its inputs with a worker pool.

A stage (see `Stage`) enumerates its work items and processes one at a time,
raising `Skip` for bad input. The runner

- takes a deterministic `--part i/n` slice (crc32 of the key, so every machine of
  a SLURM array agrees on the slice without a coordinator),
- skips items that already have a status file (a re-run or a resumed run),
- runs the rest in-process (`workers=1`), in a spawn-started process pool, or as Ray tasks
  on a Ray cluster (`cluster`: dynamic scheduling over many machines, a task whose worker or
  node dies retried by Ray on another; the same status files, outputs and summary),
- writes one status file per item *after* its outputs (so a kill -9 at any
  point only repeats the items in flight; outputs are renamed into place whole),
- catches `Skip` (recorded with its reason) and unexpected exceptions (recorded
  with the traceback, counted as failed: the only case that makes the command
  exit non-zero),
- rewrites `status/<stage>/failures.jsonl` and `summary.json`, prints a summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from fd2talk.core import atomic
from fd2talk.core.defaults import defaults as config_defaults
from fd2talk.core.skip import PrepError, Skip

STATUS_DIR = "status"


@dataclass(frozen=True)
class Item:
    """One unit of work: `key` names it (and its status file); `payload` is JSON-able.

    `group` decides which `--part` owns the item (default: the key). Every stage sets it
    to the manifest row's key, so all stages of one source run in the same part.
    """

    key: str
    payload: dict = field(default_factory=dict)
    group: str = ""


class Stage(Protocol):
    name: str  # "clip", "crop", ...: names the status folder
    out_dir: str  # folder under the work dir that holds the outputs
    config: Any  # a frozen dataclass; recorded in status/<name>/config.json
    # optional: `input_fields`, config fields that name inputs, not settings (not compared)

    def items(self, work: Path) -> list[Item]: ...

    def setup(self) -> None: ...  # load models; called once per worker process

    def process(self, item: Item, work: Path) -> list[str]: ...  # output paths, relative to work


@dataclass(frozen=True)
class Part:
    """Slice `index` of `count` (0-based), e.g. from `--part 3/8`."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Part:
        if not text:
            return cls()
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise PrepError(f"--part {text!r}: expected i/n, e.g. 0/4") from None
        if n < 1 or not 0 <= i < n:
            raise PrepError(f"--part {text!r}: need 0 <= i < n")
        return cls(i, n)

    def owns(self, key: str) -> bool:
        return zlib.crc32(key.encode()) % self.count == self.index

    @property
    def whole(self) -> bool:
        return self.count == 1


@dataclass
class Summary:
    stage: str
    total: int = 0  # items in this part
    already: int = 0  # complete (done or skipped) before this run
    done: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count (this run)
    failed: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("failures")
        out["skipped"] = dict(self.skipped)
        return out


def status_dir(work: Path, stage: str) -> Path:
    return Path(work) / STATUS_DIR / stage


def read_status(work: Path, stage: str, key: str) -> dict | None:
    path = status_dir(work, stage) / f"{key}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


# Config fields that never shape an output: a re-run may change them freely.
NEUTRAL_FIELDS = ("timeout",)


def _config_record(stage: Stage) -> dict:
    """The settings that shape the outputs (not inputs such as the manifest's path, nor
    timeouts)."""
    record = json.loads(json.dumps(dataclasses.asdict(stage.config), default=str))
    for name in (*getattr(stage, "input_fields", ()), *NEUTRAL_FIELDS):
        record.pop(name, None)
    return record


def _complete(rec: dict | None) -> bool:
    """Done or skipped for good; a timeout is retried (maybe with a longer --timeout)."""
    return rec is not None and rec.get("reason") != "timeout"


def _pending(rec: dict | None, item: Item) -> bool:
    """Not complete, or skipped for inputs that have changed since (e.g. a manifest row now
    marked `audio: no` that was a `no_audio_stream` skip): a skip is a verdict on its inputs."""
    if not _complete(rec):
        return True
    return rec["status"] == "skipped" and "inputs" in rec and rec["inputs"] != json.loads(
        json.dumps(item.payload))


def _check_config(stage: Stage, work: Path, force: bool) -> None:
    """Refuse to mix outputs of different configs (nanoGPT-style resume check)."""
    sdir = status_dir(work, stage.name)
    path = sdir / "config.json"
    current = _config_record(stage)
    if path.is_file():
        previous = json.loads(path.read_text())
        # a setting added since the old outputs were made: what they were made with is the
        # config's LEGACY value for it (a check that did not run yet), else its default
        defaults = json.loads(json.dumps(config_defaults(type(stage.config)), default=str))
        defaults.update(getattr(stage.config, "LEGACY", {}))
        previous = {**{k: defaults[k] for k in current if k not in previous and k in defaults},
                    **previous}
        if previous != current and not force:
            diff = {k: (previous.get(k), current.get(k)) for k in set(previous) | set(current)
                    if previous.get(k) != current.get(k)}
            raise PrepError(
                f"{stage.name}: {work} holds outputs made with other settings {diff} "
                "(old, new); use a new work dir, the old settings, or --force to redo them")
        if previous != current:
            # --force: drop every output the old settings made (sidecar json first, so no
            # later stage picks up a half-removed clip), then the records
            for rec_path in sorted(sdir.glob("*.json")):
                if rec_path.name in ("config.json", "summary.json", "state.json"):
                    continue
                outputs = json.loads(rec_path.read_text()).get("outputs") or []
                for rel in sorted(outputs, key=lambda o: not o.endswith(".json")):
                    (Path(work) / rel).unlink(missing_ok=True)
                rec_path.unlink()
    sdir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, current)


# Worker-process state: the stage object, set up once per process.
_WORKER_STAGE: Stage | None = None


def _init_worker(stage: Stage, threads: int) -> None:
    global _WORKER_STAGE
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch/numpy when they load
    stage.setup()
    if "torch" in sys.modules:  # only stages that use torch pay for importing it
        sys.modules["torch"].set_num_threads(threads)
    _WORKER_STAGE = stage


def _process_one(stage: Stage, item: Item, work: Path) -> dict:
    """Run one item; write its status file; return the record (status done/skipped/failed)."""
    t0 = time.perf_counter()
    rec: dict = {"key": item.key, "stage": stage.name, "inputs": item.payload}
    try:
        rec["outputs"] = stage.process(item, work)
        rec["status"] = "done"
    except Skip as skip:
        rec.update(status="skipped", **skip.record())
    except Exception as e:  # noqa: BLE001 - the runner is the one place that must not die
        rec.update(status="failed", error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc())
    rec["seconds"] = round(time.perf_counter() - t0, 6)
    if rec["status"] != "failed":
        atomic.write_json(status_dir(work, stage.name) / f"{item.key}.json", rec)
    return rec


def _close(stage: Stage) -> None:
    close = getattr(stage, "close", None)
    if close:
        close()


def _check_setup(stage: Stage) -> None:
    """Set the stage up once here before any worker does: a missing or bad weight file is then
    one clear error, not a broken pool or a failed task per item."""
    stage.setup()
    _close(stage)


def _worker_process(item: Item, work: Path) -> dict:
    assert _WORKER_STAGE is not None
    return _process_one(_WORKER_STAGE, item, work)


def _write_failures(work: Path, stage: str, failed: list[dict]) -> list[dict]:
    """Rebuild failures.jsonl from every skip on record plus this run's failures."""
    sdir = status_dir(work, stage)
    recs = []
    for path in sorted(sdir.glob("*.json")):
        if path.name in ("config.json", "summary.json"):
            continue
        rec = json.loads(path.read_text())
        if rec["status"] == "skipped":
            recs.append(rec)
    recs += sorted(failed, key=lambda r: r["key"])
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs)
    atomic.write_bytes(sdir / "failures.jsonl", text.encode())
    return recs


def run_stage(stage: Stage, work: Path, workers: int = 1, part: Part = Part(),
              force: bool = False, progress: bool = True,
              on_result: Callable[[dict], None] | None = None,
              cluster: str | None = None, cluster_gpus: float = 0.0) -> Summary:
    """Process every pending item of `stage` in `work`; return the summary (also written).
    `cluster`: run the items as Ray tasks: "local" starts a Ray cluster on this machine with
    `workers` CPUs, "auto" joins the one running here (`ray start`), any other value is a Ray
    address (e.g. ray://head:10001). The work dir must be shared storage all nodes see.
    `cluster_gpus`: the share of a GPU each task asks for (0.25: four tasks a GPU), for the
    backends that run on CUDA (S3FD, Deep3D, wav2vec2)."""
    from tqdm import tqdm

    work = Path(work)
    t0 = time.perf_counter()
    all_items = stage.items(work)  # validates the inputs (a bad manifest stops here)
    _check_config(stage, work, force)
    (work / stage.out_dir).mkdir(parents=True, exist_ok=True)
    if part.whole:
        atomic.clean_tmp(work / stage.out_dir)
    items = [it for it in all_items if part.owns(it.group or it.key)]
    summary = Summary(stage.name, total=len(items))
    pending = [it for it in items if _pending(read_status(work, stage.name, it.key), it)]
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

    bar = tqdm(total=len(pending), desc=f"{stage.name}", unit="clip", disable=not progress,
               dynamic_ncols=True)
    try:
        if cluster is not None and pending:
            _check_setup(stage)
            _map_ray(stage, pending, work, cluster, workers, account, bar, cluster_gpus)
        elif workers <= 1 or len(pending) <= 1:
            if pending:
                stage.setup()
            for it in pending:
                account(_process_one(stage, it, work))
                bar.update(1)
        else:
            _check_setup(stage)
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(stage, threads)) as pool:
                queue = list(reversed(pending))
                running: dict = {}
                while queue or running:
                    while queue and len(running) < 2 * workers:
                        it = queue.pop()
                        running[pool.submit(_worker_process, it, work)] = it
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        it = running.pop(fut)
                        try:
                            account(fut.result())
                        except BrokenProcessPool:
                            # A worker died (killed for memory, or a crash in native code):
                            # the items in flight fail; a re-run retries them.
                            for lost in [it, *running.values()]:
                                account({"key": lost.key, "stage": stage.name,
                                         "inputs": lost.payload, "status": "failed",
                                         "error": "a worker process died while processing "
                                         "it (out of memory, or a crash in native code)",
                                         "traceback": ""})
                            running.clear()
                            queue.clear()
                            break
                        bar.update(1)
    finally:
        bar.close()
        _close(stage)
    summary.failures = _write_failures(work, stage.name, failed)
    summary.seconds = round(time.perf_counter() - t0, 2)
    if part.whole:
        atomic.write_json(status_dir(work, stage.name) / "summary.json", summary.to_dict())
    return summary


# ---- Ray ---------------------------------------------------------------------------------

RAY_RETRIES = 3  # times Ray reruns a task whose worker process or node died
RAY_OBJECT_STORE = 256 * 2**20  # bytes, a local cluster's object store: items are small

# Ray worker-process state: the settings of the stage `_WORKER_STAGE` was set up with.
_RAY_KEY: str | None = None


def _ray_task(stage: Stage, item: Item, work: str) -> dict:
    """One item in a Ray worker: a stage is set up once per worker process (one CPU a task),
    as the process pool's workers are."""
    global _RAY_KEY
    key = stage.name + json.dumps(_config_record(stage), sort_keys=True)
    if key != _RAY_KEY:
        if _WORKER_STAGE is not None:
            _close(_WORKER_STAGE)
        _init_worker(stage, 1)
        _RAY_KEY = key
    return _worker_process(item, Path(work))


def ray_init(cluster: str, workers: int = 1):
    """Connect to (or start) the Ray cluster once per process; returns the `ray` module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports usage online otherwise
    try:
        import ray
    except ImportError:
        raise PrepError("--ray needs Ray: pip install -c constraints.txt 'ray==2.60.0' "
                        "(install.sh installs it)") from None
    if ray.is_initialized():
        return ray
    common = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    help_ = ("start one with `ray start --head` or give its address (HOST:6379, "
             "ray://HOST:10001), or use --ray local")
    if cluster not in ("local", "auto"):
        host, _, port = cluster.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise PrepError(f"--ray {cluster}: an address is HOST:PORT; {help_}")
        try:  # Ray itself would retry for minutes
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as e:
            raise PrepError(f"--ray {cluster}: nothing answers there ({e}); {help_}") from None
    try:
        if cluster == "local":
            ray.init(num_cpus=max(1, workers), object_store_memory=RAY_OBJECT_STORE, **common)
        else:
            ray.init(address=cluster, **common)
    except (ConnectionError, RuntimeError, ValueError, SystemExit) as e:
        raise PrepError(f"--ray {cluster}: cannot join a Ray cluster ({e}); {help_}") from None
    return ray


def _map_ray(stage: Stage, pending: list[Item], work: Path, cluster: str, workers: int,
             account: Callable[[dict], None], bar, gpus: float = 0.0) -> None:
    """Every pending item as a Ray task, a bounded number in flight, accounted as they end
    (dynamic: long and short clips balance themselves over the cluster)."""
    ray = ray_init(cluster, workers)
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=RAY_RETRIES,
                      retry_exceptions=False)(_ray_task)
    stage_ref = ray.put(stage)
    cpus = int(ray.cluster_resources().get("CPU", workers))
    in_flight = max(2, 4 * cpus)
    queue = list(reversed(pending))
    running: dict = {}
    while queue or running:
        while queue and len(running) < in_flight:
            it = queue.pop()
            running[task.remote(stage_ref, it, str(work))] = it
        finished, _ = ray.wait(list(running), num_returns=1)
        for ref in finished:
            it = running.pop(ref)
            try:
                rec = ray.get(ref)
            except ray.exceptions.RayError as e:
                cause = getattr(e, "cause", None)  # RayTaskError: what the task raised
                if isinstance(e, ray.exceptions.RayTaskError) and cause is not None:
                    why = f"the task raised {type(cause).__name__}: {cause}"
                else:  # its worker or node was lost RAY_RETRIES + 1 times
                    why = (f"{type(e).__name__} after {RAY_RETRIES} retries: "
                           f"{(str(e).splitlines() or [''])[0]}")
                rec = {"key": it.key, "stage": stage.name, "inputs": it.payload,
                       "status": "failed", "traceback": "", "error": f"Ray could not run it ({why})"}
            account(rec)
            bar.update(1)


def print_summary(summary: Summary) -> None:
    """A table: done, skipped by reason, failed (stderr, so stdout stays clean)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fd2talk-prep {summary.stage}: {summary.total} items, "
                  f"{summary.seconds:.1f} s")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("complete before this run", str(summary.already))
    table.add_row("done", str(summary.done))
    for reason, n in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", str(n))
    table.add_row("failed (unexpected)", str(summary.failed),
                  style="bold red" if summary.failed else None)
    console = Console(stderr=True)
    console.print(table)
    for rec in summary.failures:
        if rec["status"] == "failed":
            console.print(f"[red]failed[/red] {rec['key']}: {rec['error']}")
