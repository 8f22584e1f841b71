"""The whole pipeline (`fd2talk-prep run`) on generated demo data: shards come out right,
and a run killed with kill -9 at several points resumes to byte-identical outputs."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from helpers import REPO, start_then_kill
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core import schema
from fd2talk.model.demo.generator import make_demo
from fd2talk.model.demo.variants import DemoConfig

OUTPUT_DIRS = ("clips", "crops", "coeffs", "audio", "shards")


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    return make_demo(root, DemoConfig(n_videos=4, seconds=3.0, seed=1))


def _hashes(work: Path) -> dict[str, str]:
    out = {}
    for d in OUTPUT_DIRS:
        for p in sorted((work / d).rglob("*")):
            if p.is_file() and ".tmp" not in p.parts:
                out[str(p.relative_to(work))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def clean_run(demo_manifest, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("clean")
    result = CliRunner().invoke(app, ["run", str(work), "--manifest", str(demo_manifest)])
    assert result.exit_code == 0, result.output
    return work


@pytest.mark.slow
def test_run_makes_valid_shards(clean_run):
    work = clean_run
    header = json.loads((work / "shards" / "manifest.jsonl").read_text().splitlines()[0])
    assert sum(header["counts"].values()) == 4, header  # one face, one crop per video
    assert header["counts"]["val"] >= 1 and header["counts"]["test"] >= 1
    urls = sorted(str(p) for p in (work / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())
    assert len(samples) == 4
    for s in samples:
        n = schema.validate_sample(s)
        assert n == 75 and s["exp.npy"].shape == (75, 52) and s["audio.npy"].shape[0] == 75
        assert s["valid.npy"].all()
        assert s["json"]["coeffs"] == "mediapipe" and s["json"]["audio_features"] == "logmel"
        assert np.ptp(s["exp.npy"][:, 25]) > 0.05  # jawOpen moves: the demo mouth talks


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_is_identical(demo_manifest, clean_run, tmp_path):
    work = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-c",
        "from fd2talk.cli.prep import main; main()",
        "run",
        str(work),
        "--manifest",
        str(demo_manifest),
        "-q",
    ]
    kills = 0
    # kill after 2, 6 and 10 seconds of work: inside clip, crop/coeffs, and later stages
    for delay in (2.0, 6.0, 10.0):
        kills += start_then_kill(cmd, lambda: True, delay)
    assert kills >= 2
    done = subprocess.run(cmd, cwd=REPO, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _hashes(work) == _hashes(clean_run)


@pytest.mark.slow
def test_part_runs_then_shard_equal_the_whole_run(demo_manifest, clean_run, tmp_path):
    work = tmp_path / "parts"
    runner = CliRunner()
    for i in range(2):
        result = runner.invoke(
            app, ["run", str(work), "--manifest", str(demo_manifest), "--part", f"{i}/2", "-q"]
        )
        assert result.exit_code == 0, result.output
        assert not (work / "shards").exists()  # shard waits for every part
    result = runner.invoke(app, ["shard", str(work), "-q"])
    assert result.exit_code == 0, result.output
    assert _hashes(work) == _hashes(clean_run)
