"""A real stage over integers and small manifests, for the runner and Ray tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fd2talk.core.skip import Skip, SkipReason
from fd2talk.pipeline.runner.work import Item
from helpers import ffmpeg_video


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


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".tmp" not in p.parts
    }


def counting_manifest(tmp_path, n=5):
    rows = ["key,path"]
    for i in range(n):
        src = ffmpeg_video(
            tmp_path / f"src{i}.mp4",
            seconds=1.0 + 0.4 * i,
            fps=24 + i,
            sample_rate=44100,
            channels=2,
        )
        rows.append(f"v{i},{src}")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    return path
