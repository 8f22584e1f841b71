"""`fd2talk-prep ... --ray`: the stages' per-clip functions as Ray tasks on a real local Ray
cluster (2 CPUs, started in the test): the same outputs, byte for byte, and the same named
skips as the local runner; a worker process killed mid-clip has its clip retried by Ray."""

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray  # install.sh installs it (the `ray` extra)
from helpers.runner import CountingStage, counting_manifest, tree_hashes

from fd2talk.core import atomic
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage


@pytest.fixture(scope="module")
def local_cluster():
    """One local Ray cluster (2 CPUs) for this module, stopped at its end."""
    from fd2talk.pipeline.runner.ray_cluster import ray_init

    ray_init("local", workers=2)
    yield "local"
    ray.shutdown()


def _skips(work: Path) -> dict:
    lines = (work / "status" / "clip" / "failures.jsonl").read_text().splitlines()
    return {r["key"]: r["reason"] for r in map(json.loads, lines)}


def test_ray_makes_the_same_outputs_and_skips_as_the_local_runner(local_cluster, tmp_path):
    manifest = counting_manifest(tmp_path, 4)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    manifest.write_text(manifest.read_text() + f"bad,{tmp_path / 'broken.mp4'}\n")
    local = run_stage(ClipStage(ClipConfig(str(manifest))), tmp_path / "a", progress=False)
    on_ray = run_stage(
        ClipStage(ClipConfig(str(manifest))),
        tmp_path / "b",
        workers=2,
        progress=False,
        cluster=local_cluster,
    )
    assert (local.done, on_ray.done) == (4, 4) and on_ray.ok
    assert dict(on_ray.skipped) == dict(local.skipped) and sum(on_ray.skipped.values()) == 1
    assert _skips(tmp_path / "b") == _skips(tmp_path / "a")
    assert tree_hashes(tmp_path / "b" / "clips") == tree_hashes(tmp_path / "a" / "clips")
    again = run_stage(
        ClipStage(ClipConfig(str(manifest))),
        tmp_path / "b",
        workers=2,
        progress=False,
        cluster=local_cluster,
    )
    assert (again.already, again.done) == (5, 0)  # resumes: nothing is redone


class DyingOnceStage(CountingStage):
    """Writes n squared; the first time it meets `victim`, kills its own worker process
    (SIGKILL, mid-clip: its output is half-written under a temporary name)."""

    name = "dying"

    def process(self, item, work):
        n = item.payload["n"]
        marker = work / f"killed_{item.key}"
        final = work / "out" / f"{item.key}.txt"
        with atomic.atomic_path(final) as tmp:  # as every real stage writes its outputs
            tmp.write_text("half")
            if n == self.config.victim and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)  # mid-write
            tmp.write_text(str(n * n))
        return [f"out/{item.key}.txt"]


@dataclass(frozen=True)
class DyingConfig:
    numbers: tuple
    victim: int


def test_a_killed_ray_worker_has_its_clip_retried(local_cluster, tmp_path):
    import ray.cloudpickle

    for module in (__name__, CountingStage.__module__):  # Ray's workers lack tests/
        ray.cloudpickle.register_pickle_by_value(sys.modules[module])
    stage = DyingOnceStage(DyingConfig(tuple(range(6)), victim=3))
    s = run_stage(stage, tmp_path, workers=2, progress=False, cluster=local_cluster)
    assert (tmp_path / "killed_k3").exists()  # the worker did die
    assert s.ok and s.done == 6 and s.failed == 0
    assert (tmp_path / "out" / "k3.txt").read_text() == "9"  # whole, from the retry
    assert sorted(p.name for p in (tmp_path / "out").glob("k*")) == [
        f"k{n}.txt" for n in range(6)
    ]  # no half-written file under a final name
    assert json.loads((tmp_path / "status" / "dying" / "k3.json").read_text())["status"] == "done"


def test_an_unreachable_cluster_is_a_clear_error_not_a_wait(tmp_path):
    import subprocess
    import time

    from helpers import REPO, ffmpeg_video

    src = ffmpeg_video(tmp_path / "v.mp4", seconds=1.0)
    (tmp_path / "m.csv").write_text(f"key,path\nv,{src}\n")
    start = time.time()
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.prep import main; main()",
            "clip",
            str(tmp_path / "w"),
            "-m",
            str(tmp_path / "m.csv"),
            "--ray",
            "127.0.0.1:1",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 2 and "--ray 127.0.0.1:1: nothing answers there" in r.stderr
    assert "Traceback" not in r.stderr and time.time() - start < 60
