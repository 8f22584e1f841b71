"""The Ray distributor: every pending item as a Ray task on a Ray cluster (dynamic scheduling
over many machines; a task whose worker or node dies is retried by Ray on another), with the
same status files, outputs and summary as the process pool. The work dir must be shared
storage all nodes see."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.runner import worker
from fd2talk.pipeline.runner.settings import config_record
from fd2talk.pipeline.runner.work import Item, Stage

RAY_RETRIES = 3  # times Ray reruns a task whose worker process or node died
RAY_OBJECT_STORE = 256 * 2**20  # bytes, a local cluster's object store: items are small

# Ray worker-process state: the settings of the stage `worker` was set up with.
_RAY_KEY: str | None = None


def _ray_task(stage: Stage, item: Item, work: str) -> dict:
    """One item in a Ray worker: a stage is set up once per worker process (one CPU a task),
    as the process pool's workers are."""
    global _RAY_KEY
    key = stage.name + json.dumps(config_record(stage), sort_keys=True)
    if key != _RAY_KEY:
        worker.close_worker()
        worker.init_worker(stage, 1)
        _RAY_KEY = key
    return worker.worker_process(item, Path(work))


def ray_init(cluster: str, workers: int = 1):
    """Connect to (or start) the Ray cluster once per process; returns the `ray` module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports usage online otherwise
    try:
        import ray
    except ImportError:
        raise PrepError(
            "--ray needs Ray: pip install -c constraints.txt 'ray==2.60.0' (install.sh installs it)"
        ) from None
    if ray.is_initialized():
        return ray
    common = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    help_ = (
        "start one with `ray start --head` or give its address (HOST:6379, "
        "ray://HOST:10001), or use --ray local"
    )
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


@dataclass(frozen=True)
class RayCluster:
    """Ray tasks on `cluster`: "local" starts a Ray cluster on this machine with `workers` CPUs,
    "auto" joins the one running here (`ray start`), any other value is a Ray address (e.g.
    ray://head:10001). `gpus`: the share of a GPU each task asks for (0.25: four tasks a GPU),
    for the backends that run on CUDA (S3FD, Deep3D, wav2vec2)."""

    cluster: str
    workers: int = 1
    gpus: float = 0.0

    def map(
        self,
        stage: Stage,
        items: Sequence[Item],
        work: Path,
        account: Callable[[dict], None],
        advance: Callable[[], None],
    ) -> None:
        """Every item as a Ray task, a bounded number in flight, accounted as they end
        (dynamic: long and short clips balance themselves over the cluster)."""
        worker.check_setup(stage)
        ray = ray_init(self.cluster, self.workers)
        task = ray.remote(
            num_cpus=1, num_gpus=self.gpus, max_retries=RAY_RETRIES, retry_exceptions=False
        )(_ray_task)
        stage_ref = ray.put(stage)
        cpus = int(ray.cluster_resources().get("CPU", self.workers))
        in_flight = max(2, 4 * cpus)
        queue = list(reversed(items))
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
                        why = (
                            f"{type(e).__name__} after {RAY_RETRIES} retries: "
                            f"{(str(e).splitlines() or [''])[0]}"
                        )
                    rec = worker.lost(stage, it, f"Ray could not run it ({why})")
                account(rec)
                advance()
