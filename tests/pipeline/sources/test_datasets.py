"""`fd2talk-prep manifest hdtf|vfhq|folder`: small made-up annotation files in each dataset's
published format, real (tiny) videos, and the manifests they give read back by the manifest
reader and cut by the clip stage where a span matters."""

import json
import subprocess
import sys

import pytest
from helpers import REPO, ffmpeg_video

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.sources import datasets
from fd2talk.pipeline.sources.manifest import read_manifest
from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage


def prep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from fd2talk.cli.prep import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_hdtf_spans_become_rows_cut_by_the_clip_stage(tmp_path):
    ann, vids = tmp_path / "HDTF_dataset", tmp_path / "videos"
    ann.mkdir()
    (vids / "sub").mkdir(parents=True)
    # HDTF's published naming: one person's videos are NAME, NAME0, NAME1...
    (ann / "WDA_video_url.txt").write_text(
        "AmyKlobuchar0 https://www.youtube.com/watch?v=x\n"
        "AmyKlobuchar1 https://www.youtube.com/watch?v=y\n"
    )
    (ann / "WDA_annotion_time.txt").write_text(
        "AmyKlobuchar0.mp4 00:00-00:01 00:02-00:03 \n"
        "AmyKlobuchar1.mp4 00:01-00:03\n"
        "JohnGone.mp4 00:00-00:05\n"  # annotated, never downloaded
        "BrokenSpan.mp4 00:09-00:03\n"
    )
    (ann / "RD_annotion_time.txt").write_text("\ufeffRadio7.mp4 00:00-00:02\n")  # a BOM
    for name in ("AmyKlobuchar0", "BrokenSpan"):
        ffmpeg_video(vids / f"{name}.mp4", seconds=4.0)
    ffmpeg_video(vids / "sub" / "AmyKlobuchar1.mp4", seconds=4.0)
    ffmpeg_video(vids / "Radio7.mp4", seconds=3.0)
    out = tmp_path / "hdtf.csv"
    r = prep(
        "manifest", "hdtf", "--annotations", str(ann), "--videos", str(vids), "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert "left out 1 annotated videos" in r.stderr and "JohnGone" in r.stderr
    assert "BrokenSpan" in r.stderr and "Traceback" not in r.stderr
    assert "videos/sub/AmyKlobuchar1.mp4" in out.read_text()  # relative to the manifest
    rows = {row.key: row for row in read_manifest(out)}
    assert sorted(rows) == ["AmyKlobuchar0_0", "AmyKlobuchar0_1", "AmyKlobuchar1_0", "Radio7_0"]
    second = rows["AmyKlobuchar0_1"]
    assert (second.start, second.end, second.video_id, second.speaker_id) == (
        2.0,
        3.0,
        "AmyKlobuchar0",
        "AmyKlobuchar",
    )
    assert rows["AmyKlobuchar1_0"].speaker_id == "AmyKlobuchar"  # one person, two videos
    assert rows["Radio7_0"].speaker_id == "Radio7"
    s = run_stage(
        ClipStage(ClipConfig(str(out), min_seconds=0.5)), tmp_path / "work", progress=False
    )
    assert s.done == 4
    meta = json.loads((tmp_path / "work" / "clips" / "AmyKlobuchar0_1_f000.json").read_text())
    assert meta["frames"] == 25  # the one-second span


def test_vfhq_meta_info_gives_frame_ranges_and_people(tmp_path):
    meta, vids = tmp_path / "meta_info", tmp_path / "videos"
    meta.mkdir()
    vids.mkdir()
    header = "Video ID: {v}\nH: 240\nW: 320\nFPS: 25.0\nPID: {p}\nCLIP: 0\nCROP: 10 20 200 220\n\n"
    for name, v, p in (
        ("Clip+abc_DEF-12+P0+C0+F0-51", "abc_DEF-12", 0),
        ("Clip+abc_DEF-12+P1+C3+F24-75", "abc_DEF-12", 1),
        ("Clip+missing1+P0+C0+F0-30", "missing1", 0),
    ):
        (meta / f"{name}.txt").write_text(header.format(v=v, p=p) + "FRAME INDEX X0 Y0 X1 Y1\n")
    (meta / "Clip+nofps+P0+C0+F0-30.txt").write_text("H: 240\n")
    (meta / "README.txt").write_text("not a clip")
    ffmpeg_video(vids / "abc_DEF-12.mkv", seconds=4.0)
    ffmpeg_video(vids / "nofps.mp4", seconds=4.0)
    built = datasets.vfhq(meta, vids)
    assert built.missing == ["missing1"] and len(built.problems) == 1
    rows = {r["key"]: r for r in built.rows}
    assert sorted(rows) == ["abc_DEF-12_P0_C0", "abc_DEF-12_P1_C3"]
    one = rows["abc_DEF-12_P1_C3"]
    # VFHQ's processing keeps frames start+1 .. end-1: 25 .. 74 at 25 fps
    assert (float(one["start"]), float(one["end"])) == (1.0, 3.0)
    assert one["speaker_id"] == "abc_DEF-12+P1" and one["video_id"] == "abc_DEF-12"
    out = tmp_path / "vfhq.csv"
    out.write_text(built.csv_text())
    assert len(read_manifest(out)) == 2


def test_a_folder_with_speakers_from_sub_folders_or_a_regex(tmp_path):
    root = tmp_path / "vox"
    for rel in (
        "id10001/1zcIwhmdeo4/00001.mp4",
        "id10001/1zcIwhmdeo4/00002.mp4",
        "id10002/xyz/00001.mov",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        ffmpeg_video(root / rel, seconds=1.0)
    (root / "notes.txt").write_text("not a video")
    ffmpeg_video(root / "id10002" / "xyz" / "é.mp4", seconds=1.0)  # no usable character
    ffmpeg_video(root / "id10002" / "xyz" / "ü.mp4", seconds=1.0)
    out = tmp_path / "vox.csv"
    r = prep("manifest", "folder", str(root), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_manifest(out)
    assert [(x.key, x.speaker_id) for x in rows][:3] == [
        ("id10001__1zcIwhmdeo4__00001", "id10001"),
        ("id10001__1zcIwhmdeo4__00002", "id10001"),
        ("id10002__xyz__00001", "id10002"),
    ]
    odd = [x.key for x in rows[3:]]  # names cleaning changed keep distinct keys (a hash)
    assert len(odd) == 2 and len(set(odd)) == 2 and all(k.startswith("id10002__xyz_") for k in odd)
    built = datasets.folder(root, r"/(?P<speaker>[^/]+)/\d+\.mp4$")
    assert [r["speaker_id"] for r in built.rows] == ["1zcIwhmdeo4", "1zcIwhmdeo4"]
    assert "id10002/xyz/00001.mov: --speaker-regex does not match" in built.problems
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepError, match="no video files"):
        datasets.folder(tmp_path / "empty")
    r = prep("manifest", "hdtf", "--annotations", str(tmp_path), "--videos", str(root))
    assert r.returncode == 2 and "no HDTF annotation files" in r.stderr
