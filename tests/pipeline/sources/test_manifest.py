"""Manifest parsing: CSV and JSONL, relative paths, and errors that name the row."""

import json

import pytest

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.sources.manifest import read_manifest


def _touch(path):
    path.write_bytes(b"x")
    return path


def test_csv_and_jsonl_rows(tmp_path):
    _touch(tmp_path / "a.mp4")
    (tmp_path / "sub").mkdir()
    _touch(tmp_path / "sub" / "b.mkv")
    (tmp_path / "m.csv").write_text(
        "key,path,start,end,video_id,speaker_id\n"
        "a,a.mp4,,,,\n"
        f"b-2,{tmp_path / 'sub' / 'b.mkv'},1.5,4,vid_b,spk\n"
    )
    rows = read_manifest(tmp_path / "m.csv")
    assert [r.key for r in rows] == ["a", "b-2"]
    assert rows[0].path == str(tmp_path / "a.mp4") and rows[0].video_id == "a.mp4"
    assert (rows[1].start, rows[1].end, rows[1].video_id, rows[1].speaker_id) == (
        1.5,
        4.0,
        "vid_b",
        "spk",
    )
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"key": "a", "path": "a.mp4", "split": "test"}) + "\n\n"
    )
    rows = read_manifest(tmp_path / "m.jsonl")
    assert rows[0].split == "test" and rows[0].path == str(tmp_path / "a.mp4")


@pytest.mark.parametrize(
    "line, message",
    [
        ("a.b,a.mp4", "may only contain"),
        (",a.mp4", "has no key"),
        ("k,missing.mp4", "does not exist"),
        ("k,a.mp4,abc", "not a number"),
        ("k,a.mp4,5,2", "is not after start"),
        ("k,https://example.org/v.mp4", "URL"),
        ("k,a.mp4,,,,,,extra", "more fields"),
    ],
)
def test_bad_csv_rows_name_the_row(tmp_path, line, message):
    _touch(tmp_path / "a.mp4")
    (tmp_path / "m.csv").write_text(f"key,path,start,end\nok,a.mp4\n{line}\n")
    with pytest.raises(PrepError, match=message) as err:
        read_manifest(tmp_path / "m.csv")
    assert "m.csv:3" in str(err.value)


def test_bad_jsonl_and_duplicates(tmp_path):
    _touch(tmp_path / "a.mp4")
    (tmp_path / "m.jsonl").write_text('{"key": "a", "path": "a.mp4"}\n{not json\n')
    with pytest.raises(PrepError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "m.jsonl").write_text('{"key": "a", "path": "a.mp4", "split": "dev"}\n')
    with pytest.raises(PrepError, match="split 'dev'"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "m.jsonl").write_text('{"key": "a", "path": "a.mp4", "colour": 1}\n')
    with pytest.raises(PrepError, match="unknown column"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "m.csv").write_text("key,path\na,a.mp4\na,a.mp4\n")
    with pytest.raises(PrepError, match="appears twice"):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(PrepError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(PrepError, match=".csv or .jsonl"):
        read_manifest(tmp_path / "m.txt")


def test_video_id_defaults_to_the_source_file(tmp_path):
    """Spans of one file are one video (one split), however the path is spelled; the id is
    the path relative to the manifest, so it survives moving the dataset with its manifest."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    _touch(data / "sub" / "talk.mp4")
    _touch(data / "other.mp4")
    _touch(tmp_path / "outside.mp4")
    (data / "m.csv").write_text(
        "key,path,start,end,video_id\n"
        "talk_a,sub/talk.mp4,0,30,\n"
        f"talk_b,{data / 'sub' / 'talk.mp4'},30,60,\n"
        "talk_c,sub/../sub/talk.mp4,60,,\n"
        "other,other.mp4,,,\n"
        "given,other.mp4,,,my_video\n"
        "out,../outside.mp4,,,\n"
    )
    rows = {r.key: r.video_id for r in read_manifest(data / "m.csv")}
    assert rows == {
        "talk_a": "sub/talk.mp4",
        "talk_b": "sub/talk.mp4",
        "talk_c": "sub/talk.mp4",
        "other": "other.mp4",
        "given": "my_video",
        "out": str((tmp_path / "outside.mp4").resolve()),
    }
    moved = tmp_path / "moved"
    data.rename(moved)
    relative = ("talk_a", "talk_c", "other", "given")  # paths given relative to the manifest
    assert {
        r.key: r.video_id
        for r in read_manifest(moved / "m.csv", check_paths=False)
        if r.key in relative
    } == {k: rows[k] for k in relative}
