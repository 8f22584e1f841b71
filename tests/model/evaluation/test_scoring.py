"""`fd2talk-eval videos` on real talking-head clips: the metrics of a video against itself and
against a degraded copy, matching by name, the outputs, weights reported unavailable, and
LSE through a stand-in SyncNet file (model/evaluation: scoring, videos, report)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from fd2talk.core.errors import UserError
from fd2talk.model.evaluation.scoring import score_video
from fd2talk.model.evaluation.tools import Tools
from fd2talk.model.evaluation.videos import match_videos


def _cut(src: Path, out: Path, vf: str = "null", seconds: float = 2.0) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-t",
            str(seconds),
            "-vf",
            f"scale=256:256,{vf}",
            "-c:v",
            "libx264",
            "-crf",
            "12",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ar",
            "16000",
            str(out),
        ],
        check=True,
        timeout=120,
    )
    return out


@pytest.fixture(scope="module")
def clips(shared_media, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    (d / "gt").mkdir()
    (d / "same").mkdir()
    (d / "blur").mkdir()
    src = shared_media / "talk_10_512.mp4"
    gt = _cut(src, d / "gt" / "talk.mp4")
    (d / "same" / "talk.mp4").write_bytes(gt.read_bytes())
    _cut(src, d / "blur" / "talk.mp4", "gblur=sigma=3")
    return d


def test_a_video_against_itself_and_against_a_blurred_copy(clips, face_model):
    tools = Tools.load(None, str(face_model))
    same = score_video(clips / "same" / "talk.mp4", clips / "gt" / "talk.mp4", tools)
    assert same["frames"] == 50 and same["face_rate"] > 0.9
    assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0)
    assert same["lmd"] == 0.0 and same["jaw_r_true"] == pytest.approx(1.0)
    blur = score_video(clips / "blur" / "talk.mp4", clips / "gt" / "talk.mp4", tools)
    assert 20 < blur["psnr"] < 40 and blur["ssim"] < 0.95
    assert 0 < blur["lmd"] < 0.1  # the landmarks move a little on a blurred face
    for row in (same, blur):  # the speech-side metrics need no ground truth
        assert -1 <= row["jaw_r_speech"] <= 1 and row["diversity_lmk"] > 0
        assert 0 <= row["beat_align_lmk"] <= 1
    alone = score_video(clips / "same" / "talk.mp4", None, tools)
    assert "psnr" not in alone and alone["jaw_r_speech"] == same["jaw_r_speech"]


def test_videos_are_matched_by_name(clips, tmp_path):
    pairs = match_videos(clips / "blur", clips / "gt")
    assert [(n, g.name, r.name) for n, g, r in pairs] == [("talk", "talk.mp4", "talk.mp4")]
    (tmp_path / "other.mp4").write_bytes((clips / "gt" / "talk.mp4").read_bytes())
    with pytest.raises(UserError, match="no ground truth in .* for other.mp4"):
        match_videos(tmp_path, clips / "gt")
    (tmp_path / "other.mov").write_bytes(b"")  # the same name twice: which one is meant?
    with pytest.raises(UserError, match="two videos named 'other'"):
        match_videos(tmp_path, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no videos"):
        match_videos(tmp_path / "empty", None)
    with pytest.raises(UserError, match="not a folder"):
        match_videos(tmp_path / "missing", None)


@pytest.mark.slow  # over 10 s: out of the fast subset
def test_eval_videos_command_writes_the_table_json_csv_and_figure(clips, face_model, tmp_path):
    from helpers.eval_nets import syncnet_file

    weights, _ = syncnet_file(tmp_path)
    np.savez(clips / "blur" / "talk.npz", pose=np.random.default_rng(0).normal(0, 0.05, (50, 6)))
    out = tmp_path / "report"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.evaluate import main; main()",
            "videos",
            "--generated",
            str(clips / "blur"),
            "--reference",
            str(clips / "gt"),
            "--out",
            str(out),
            "--face-model",
            str(face_model),
            "--syncnet",
            str(weights),
            "--device",
            "cpu",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "FD2TALK_HOPENET": "", "FD2TALK_INCEPTION": ""},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FD2Talk (paper)" in r.stdout and "38.89 / 39.95" in r.stdout
    doc = json.loads((out / "eval.json").read_text())
    row = doc["videos"][0]
    for k in (
        "psnr",
        "ssim",
        "lmd",
        "jaw_r_true",
        "jaw_r_speech",
        "diversity_lmk",
        "beat_align_lmk",
        "diversity_coeffs",
        "beat_align_coeffs",
        "lse_d",
        "lse_c",
    ):
        assert isinstance(row[k], float) and math.isfinite(row[k]), k
    assert set(doc["unavailable"]) == {"hopenet", "inception"} and doc["versions"]["torch"]
    import hashlib

    assert doc["weights"]["syncnet"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert doc["summary"]["psnr"]["videos"] == 1
    with open(out / "eval.csv") as f:
        assert [x["name"] for x in csv.DictReader(f)] == ["talk"]
    assert (out / "eval.png").stat().st_size > 10_000
    # without weights: LSE is unavailable, named with the file, and the rest still runs
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.evaluate import main; main()",
            "videos",
            "-g",
            str(clips / "same"),
            "--out",
            str(tmp_path / "bare"),
            "--face-model",
            str(face_model),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "FD2TALK_SYNCNET": ""},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "bare" / "eval.json").read_text())
    assert "syncnet_v2.model" in doc["unavailable"]["syncnet"]
    assert math.isfinite(doc["videos"][0]["jaw_r_speech"]) and "lse_d" not in doc["videos"][0]
    # a folder without videos is a one-line error
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.evaluate import main; main()",
            "videos",
            "-g",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 2 and r.stderr.startswith("error: no videos")
