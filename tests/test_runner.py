"""The stage runner: --part slices, resume after kill -9, workers, config changes, failures."""

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, ffmpeg_video, start_then_kill

from fd2talk.pipeline.clip import ClipConfig, ClipStage
from fd2talk.pipeline.runner import Item, Part, run_stage
from fd2talk.pipeline.skip import PrepError, Skip, SkipReason


class CountingStage:
    """A real stage over integers: writes n squared; skips negatives; crashes on 13."""

    name = "count"
    out_dir = "out"

    def __init__(self, config):
        self.config = config  # a frozen dataclass with `numbers`

    def items(self, work):
        return [Item(f"k{n}", {"n": n}) for n in self.config.numbers]

    def setup(self):
        pass

    def process(self, item, work):
        n = item.payload["n"]
        if n == 99 and self.config.timeout < 5:
            raise Skip(SkipReason.TIMEOUT, "ran past its timeout")
        if n == 66:
            os._exit(1)  # a worker dying (out of memory, a crash in native code)
        if n < 0:
            raise Skip(SkipReason.TOO_SHORT, f"{n} is negative")
        if n == 13:
            raise RuntimeError("unlucky")
        (work / "out" / f"{item.key}.txt").write_text(str(n * n))
        return [f"out/{item.key}.txt"]


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
        f"k{n}.txt" for n in numbers)


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


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".tmp" not in p.parts}


def _manifest(tmp_path, n=5):
    rows = ["key,path"]
    for i in range(n):
        src = ffmpeg_video(tmp_path / f"src{i}.mp4", seconds=1.0 + 0.4 * i, fps=24 + i,
                           sample_rate=44100, channels=2)
        rows.append(f"v{i},{src}")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_workers_give_the_same_outputs(tmp_path):
    manifest = _manifest(tmp_path, 4)
    one = run_stage(ClipStage(ClipConfig(str(manifest))), tmp_path / "a", progress=False)
    two = run_stage(ClipStage(ClipConfig(str(manifest))), tmp_path / "b", workers=2,
                    progress=False)
    assert one.done == two.done == 4
    assert _tree_hashes(tmp_path / "a" / "clips") == _tree_hashes(tmp_path / "b" / "clips")


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    manifest = _manifest(tmp_path, 5)
    clean = tmp_path / "clean"
    run_stage(ClipStage(ClipConfig(str(manifest))), clean, progress=False)
    work = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from fd2talk.pipeline.cli import main; main()",
           "clip", str(work), "-m", str(manifest), "-q"]
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
    assert _tree_hashes(work / "clips") == _tree_hashes(clean / "clips")


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
    assert all("worker process died" in r["error"] for r in s.failures
               if r["status"] == "failed")
    s = run_stage(_stage([1, 2, 3, 4]), tmp_path, workers=2, progress=False, force=True)
    assert s.ok and s.done == 4
