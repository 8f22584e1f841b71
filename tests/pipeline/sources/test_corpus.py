"""`fd2talk-prep manifest corpus`: a media folder indexed by its own manifest.csv. A made-up
folder with real (tiny) videos checks the rows, the pins and the errors; the real corpus's
index (../shared/corpus, the team's) checks the dev identities exist and never train."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, ffmpeg_video

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.sources.corpus import DEV_IDENTITIES, VAL_IDENTITIES, corpus
from fd2talk.pipeline.sources.manifest import read_manifest

CORPUS = Path(os.environ.get("FD2TALK_CORPUS", REPO.parent / "shared" / "corpus"))
HEADER = "file,identity,kind,audio,duration_s,note\n"


def made_up(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "talking").mkdir(parents=True)
    (root / "expression").mkdir()
    (root / "stills").mkdir()
    for name in ("a", "b", "c", "d"):
        ffmpeg_video(root / "talking" / f"{name}.mp4", seconds=1)
    ffmpeg_video(root / "expression" / "e.mp4", seconds=1)
    (root / "stills" / "p.png").write_bytes(b"png")
    (root / "manifest.csv").write_text(
        HEADER
        + "talking/a.mp4,ann,talking,yes,1,copied unchanged\n"
        + "talking/b.mp4,bob,talking,yes,1,copied unchanged\n"
        + "talking/c.mp4,cat,talking,no,1,no sound\n"
        + "talking/d.mp4,dan,talking,yes,1,synthetic: a generated clip\n"
        + "expression/e.mp4,ann,expression,yes,1,music\n"
        + "stills/p.png,pat,still,no,,a portrait\n"
    )
    return root


def test_rows_are_pinned_by_identity_and_only_speech_is_stage_1_data(tmp_path):
    root = made_up(tmp_path)
    built = corpus(root, test=("ann",), val=("bob",))
    rows = {r["key"]: r for r in built.rows}
    assert set(rows) == {
        "talking__a",
        "talking__b",
        "talking__c",
        "talking__d",
        "expression__e",
    }
    assert {r["speaker_id"]: r["split"] for r in rows.values()} == {
        "ann": "test",
        "bob": "val",
        "cat": "train",
        "dan": "train",
    }
    # music under an expression clip and a silent talking clip are video-only rows
    assert rows["expression__e"]["audio"] == "no" and rows["talking__c"]["audio"] == "no"
    assert rows["talking__a"]["audio"] == "yes"
    assert built.left_out == ["stills/p.png (a still portrait, not a video)"]
    no_synth = corpus(root, test=("ann",), val=("bob",), synthetic=False)
    assert "talking__d" not in {r["key"] for r in no_synth.rows}
    assert "talking/d.mp4 (synthetic)" in no_synth.left_out


def test_the_command_writes_a_manifest_the_reader_takes(tmp_path):
    root = made_up(tmp_path)
    out = tmp_path / "m.csv"
    r = subprocess.run(
        [sys.executable, "-c", "from fd2talk.cli.prep import main; main()", "manifest"]
        + ["corpus", str(root), "--test", "ann", "--val", "bob", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert "test: 2 rows (1 with speech), 1 people" in r.stderr
    rows = read_manifest(out)
    assert {row.key: (row.split, row.audio) for row in rows}["expression__e"] == ("test", False)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(test=("nobody",), val=()), "test identities with no talking clip with speech"),
        (dict(test=("cat",), val=()), "cat"),  # a silent clip cannot test lip sync
        (dict(test=("ann",), val=("ann",)), "in both test and val"),
    ],
)
def test_bad_identity_lists_are_errors(tmp_path, kw, message):
    with pytest.raises(PrepError, match=message):
        corpus(made_up(tmp_path), **kw)


def test_an_index_without_its_columns_is_an_error(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,who\n")
    with pytest.raises(PrepError, match="no column identity"):
        corpus(tmp_path)
    with pytest.raises(PrepError, match="does not exist"):
        corpus(tmp_path / "nowhere")


def test_the_real_corpus_holds_the_dev_identities_and_never_trains_them():
    if not (CORPUS / "manifest.csv").is_file():
        pytest.skip(f"the corpus is not at {CORPUS} (only the team's checkouts have it)")
    with (CORPUS / "manifest.csv").open(newline="") as f:
        index = list(csv.DictReader(f))
    built = corpus(CORPUS)
    by_split: dict[str, set[str]] = {}
    for row in built.rows:
        by_split.setdefault(row["split"], set()).add(row["speaker_id"])
    assert by_split["test"] == set(DEV_IDENTITIES) and by_split["val"] == set(VAL_IDENTITIES)
    assert not by_split["train"] & (by_split["test"] | by_split["val"])
    assert len(DEV_IDENTITIES) >= 5  # the dev set: five people or more, with speech
    for ident in DEV_IDENTITIES:
        rows = [r for r in index if r["identity"] == ident]
        assert rows and all(r["kind"] == "talking" and r["audio"] == "yes" for r in rows)
        assert not any(r["note"].startswith("synthetic:") for r in rows)  # real people
    assert len(by_split["train"]) >= 100
