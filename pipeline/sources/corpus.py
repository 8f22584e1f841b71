"""`fd2talk-prep manifest corpus`: a manifest from a media folder described by its own
`manifest.csv` (`file, identity, kind, audio, ..., note`), as `../shared/corpus` is: real
talking-head media gathered from public talking-head repositories, one identity label per
person.

- `talking` clips with real sound are speech: stage 1 and stage 2 data.
- `talking` clips without sound, and `expression` clips (their sound, when there is any, is
  music or a meme's, not speech), are `audio: no` rows: stage 2 only.
- `still` portraits are not video: they are listed as left out (the recipe uses them as
  portraits to look at, not as training data).
- Clips whose `note` starts with `synthetic:` (generated videos) are kept unless
  `synthetic=False`.

The speaker is the identity, and every row's split is pinned **by identity**: the `test`
identities (default `DEV_IDENTITIES`, real people talking with speech) are never seen by any
training step, the `val` identities validate, every other identity trains. An identity asked
for that the folder does not hold as a talking clip with speech is an error.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.sources.datasets import Built, safe_key

INDEX = "manifest.csv"
NEEDED = ("file", "identity", "kind", "audio", "note")
KINDS = ("talking", "expression", "still")
SYNTHETIC = "synthetic:"
# The dev test identities: six real people talking with speech, each in one clip only, of
# different sources, sizes and framings (HDTF-style 512 px, LivePortrait, VoxCeleb 224 px
# crops, a MEAD 1080p full frame, video-retalking).
DEV_IDENTITIES = ("may", "hdtf_edmarkey", "lp_d20", "patrick_stewart", "mead_W040", "vr_1")
# Validation identities: three more, as varied (a VoxCeleb crop, a MEAD frame, a megactor clip).
VAL_IDENTITIES = ("david_beckham", "mead_M026", "megactor_entf1")


def is_speech(row: dict) -> bool:
    return row["kind"] == "talking" and row["audio"].strip().lower() == "yes"


def corpus(
    root: Path,
    test: tuple[str, ...] = DEV_IDENTITIES,
    val: tuple[str, ...] = VAL_IDENTITIES,
    synthetic: bool = True,
) -> Built:
    root = Path(root)
    index = root / INDEX
    if not index.is_file():
        raise PrepError(f"{index} does not exist: the folder needs its {INDEX} index")
    with index.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in NEEDED if c not in (reader.fieldnames or ())]
        if missing:
            raise PrepError(f"{index}: no column {', '.join(missing)} (has {reader.fieldnames})")
        rows = list(reader)
    both = sorted(set(test) & set(val))
    if both:
        raise PrepError(f"identities in both test and val: {', '.join(both)}")
    speaking = {r["identity"] for r in rows if is_speech(r)}
    for name, ids in (("test", test), ("val", val)):
        absent = [i for i in ids if i not in speaking]
        if absent:
            raise PrepError(
                f"{name} identities with no talking clip with speech in {index}: "
                f"{', '.join(absent)}"
            )
    pinned = {**{i: "test" for i in test}, **{i: "val" for i in val}}
    built = Built(columns=("split", "audio"))
    keys: set[str] = set()
    for line, r in enumerate(rows, start=2):
        where = f"{index}:{line} ({r['file']})"
        if r["kind"] not in KINDS:
            built.problems.append(f"{where}: kind {r['kind']!r} is not one of {KINDS}")
            continue
        if r["kind"] == "still":
            built.left_out.append(f"{r['file']} (a still portrait, not a video)")
            continue
        if not synthetic and r["note"].startswith(SYNTHETIC):
            built.left_out.append(f"{r['file']} (synthetic)")
            continue
        path = root / r["file"]
        if not path.is_file():
            built.problems.append(f"{where}: no such file")
            continue
        key = safe_key(Path(r["file"]).with_suffix("").as_posix().replace("/", "__"))
        if key in keys:
            built.problems.append(f"{where}: key {key} taken by another file")
            continue
        keys.add(key)
        built.rows.append(
            {
                "key": key,
                "path": str(path.resolve()),
                "start": "",
                "end": "",
                "video_id": r["file"],
                "speaker_id": r["identity"],
                "split": pinned.get(r["identity"], "train"),
                "audio": "yes" if is_speech(r) else "no",
            }
        )
    return built
