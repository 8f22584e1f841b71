"""The stage runner: --part slices, resume after kill -9, workers, config changes, failures."""

import subprocess
import sys
from dataclasses import dataclass

import pytest
from helpers import REPO, start_then_kill
from helpers.runner import CountingStage, counting_manifest, tree_hashes

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.runner.work import Part
from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage


@dataclass(frozen=True)
class CountingConfig:
    numbers: tuple
    timeout: float = 1.0


def _stage(numbers, timeout=1.0):
    return CountingStage(CountingConfig(tuple(numbers), timeout))


def test_part_slices_are_disjoint_and_complete():
    keys = [f"clip_{i}" for i in range(200)]
    parts = [Part(i, 4) for i in range(4)]
    owned = [{k for k in keys if p.owns(k)} for p in parts]
    assert set().union(*owned) == set(keys)
    assert sum(len(o) for o in owned) == len(keys)
    assert all(25 <= len(o) <= 75 for o in owned)
    assert Part.parse("3/4") == Part(3, 4) and Part.parse("") == Part()
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(PrepError):
            Part.parse(bad)


def test_skips_failures_and_retry(tmp_path):
    stage = _stage([1, 2, -3, 13])
    summary = run_stage(stage, tmp_path, progress=False)
    assert (summary.done, dict(summary.skipped), summary.failed) == (2, {"too_short": 1}, 1)
    assert not summary.ok
    failed = [r for r in summary.failures if r["status"] == "failed"]
    assert failed[0]["key"] == "k13" and "unlucky" in failed[0]["traceback"]
    # a re-run retries only the failure (skips and successes are on record)
    summary = run_stage(stage, tmp_path, progress=False)
    assert (summary.already, summary.done, summary.failed) == (3, 0, 1)


def test_parts_then_whole(tmp_path):
    numbers = [n for n in range(21) if n != 13]  # 13 crashes on purpose
    for i in range(3):
        s = run_stage(_stage(numbers), tmp_path, part=Part(i, 3), progress=False)
        assert s.done == s.total
    s = run_stage(_stage(numbers), tmp_path, progress=False)
    assert s.already == 20 and s.done == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.txt")) == sorted(
        f"k{n}.txt" for n in numbers
    )


def test_changed_config_is_refused_unless_forced(tmp_path):
    run_stage(_stage([1, 2]), tmp_path, progress=False)
    with pytest.raises(PrepError, match="other settings"):
        run_stage(_stage([1, 2, 3]), tmp_path, progress=False)
    s = run_stage(_stage([1, 2, 3]), tmp_path, progress=False, force=True)
    assert s.done == 3


@dataclass(frozen=True)
class GrownConfig:
    """CountingConfig with a setting added in a later version."""

    numbers: tuple
    timeout: float = 1.0
    rounding: int = 0


def test_a_setting_added_later_counts_as_its_default_for_old_outputs(tmp_path):
    run_stage(_stage([1, 2]), tmp_path, progress=False)  # recorded without `rounding`
    s = run_stage(CountingStage(GrownConfig((1, 2))), tmp_path, progress=False)
    assert (s.already, s.done) == (2, 0)  # not refused, nothing redone
    with pytest.raises(PrepError, match="rounding"):  # another value is another setting
        run_stage(CountingStage(GrownConfig((1, 2), rounding=2)), tmp_path, progress=False)


def test_the_distributor_is_swappable(tmp_path):
    """run_stage picks this process, a process pool or Ray tasks from its options; any
    object with the same `map` can run the items instead, with the same records and outputs."""
    from fd2talk.pipeline.runner.distribute import InProcess, ProcessPool
    from fd2talk.pipeline.runner.ray_cluster import RayCluster
    from fd2talk.pipeline.runner.runner import distributor_for

    assert distributor_for(1, 5) == InProcess() and distributor_for(4, 1) == InProcess()
    assert distributor_for(4, 5) == ProcessPool(4)
    assert distributor_for(2, 5, "local", 0.5) == RayCluster("local", 2, 0.5)
    assert distributor_for(2, 0, "local") == InProcess()  # nothing to run: no cluster

    class Reversed:  # a distributor of its own: the items in reverse order, in this process
        def map(self, stage, items, work, account, advance):
            InProcess().map(stage, list(reversed(items)), work, account, advance)

    seen = []
    s = run_stage(
        _stage([1, 2, -3]),
        tmp_path / "a",
        progress=False,
        distributor=Reversed(),
        on_result=lambda rec: seen.append(rec["key"]),
    )
    assert seen == ["k-3", "k2", "k1"] and (s.done, dict(s.skipped)) == (2, {"too_short": 1})
    run_stage(_stage([1, 2, -3]), tmp_path / "b", progress=False)
    assert tree_hashes(tmp_path / "a" / "out") == tree_hashes(tmp_path / "b" / "out")


def test_workers_give_the_same_outputs(tmp_path):
    manifest = counting_manifest(tmp_path, 4)
    one = run_stage(ClipStage(ClipConfig(str(manifest))), tmp_path / "a", progress=False)
    two = run_stage(ClipStage(ClipConfig(str(manifest))), tmp_path / "b", workers=2, progress=False)
    assert one.done == two.done == 4
    assert tree_hashes(tmp_path / "a" / "clips") == tree_hashes(tmp_path / "b" / "clips")


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    manifest = counting_manifest(tmp_path, 5)
    clean = tmp_path / "clean"
    run_stage(ClipStage(ClipConfig(str(manifest))), clean, progress=False)
    work = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-c",
        "from fd2talk.cli.prep import main; main()",
        "clip",
        str(work),
        "-m",
        str(manifest),
        "-q",
    ]
    kills = 0
    status = work / "status" / "clip"
    for delay in (0.0, 0.4, 0.8):  # kill while items are in flight, at different points
        done_before = len(list(status.glob("v*.json")))

        def progressed(n=done_before) -> bool:  # at least one more item finished
            return len(list(status.glob("v*.json"))) > n

        kills += start_then_kill(cmd, progressed, delay)
    assert kills >= 1
    final = subprocess.run(cmd, cwd=REPO, timeout=300)
    assert final.returncode == 0
    assert tree_hashes(work / "clips") == tree_hashes(clean / "clips")


def test_force_removes_what_the_old_settings_made(tmp_path):
    run_stage(_stage([1, 2, 3]), tmp_path, progress=False)
    assert (tmp_path / "out" / "k3.txt").exists()
    run_stage(_stage([1, 2]), tmp_path, progress=False, force=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["k1.txt", "k2.txt"]


def test_timeouts_are_retried_with_a_longer_timeout(tmp_path):
    s = run_stage(_stage([1, 99], timeout=1.0), tmp_path, progress=False)
    assert dict(s.skipped) == {"timeout": 1}
    s = run_stage(_stage([1, 99], timeout=60.0), tmp_path, progress=False)  # not refused
    assert (s.already, s.done) == (1, 1)


def test_a_dying_worker_fails_its_items_not_the_run(tmp_path):
    s = run_stage(_stage([1, 2, 66, 3, 4]), tmp_path, workers=2, progress=False)
    assert not s.ok and s.failed >= 1
    failed = {r["key"] for r in s.failures if r["status"] == "failed"}
    assert "k66" in failed
    assert all("worker process died" in r["error"] for r in s.failures if r["status"] == "failed")
    s = run_stage(_stage([1, 2, 3, 4]), tmp_path, workers=2, progress=False, force=True)
    assert s.ok and s.done == 4
