"""Dataset manifests: CSV or JSONL rows naming source videos (DESIGN.md section 2, `manifests/`).

Columns: `key` (letters, digits, `_`, `-`), `path` (absolute, or relative to the
manifest file), optional `start`/`end` (seconds), optional `video_id`, optional
`speaker_id`, optional `split` (train/val/test; pins the split of the row's group, see
`split.py`), optional `audio` (`no`: a source without usable speech, for stage 2 only: it
is clipped, cropped and gets coefficients, skips the audio stage and is sharded with
`"audio": false`; default `yes`). A malformed row is a `PrepError` naming the file, the line
and what is wrong.

`video_id` defaults to the source file: its resolved path relative to the manifest's
folder (`sub/b.mkv`), or the absolute path for a file outside that folder. So rows that
cut spans from one file are one video and land in one split, and the id (hence the split)
does not change when the dataset moves with its manifest.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fd2talk.core.schema import KEY_PATTERN
from fd2talk.core.skip import PrepError

SPLITS = ("train", "val", "test")
COLUMNS = ("key", "path", "start", "end", "video_id", "speaker_id", "split", "audio")
YES, NO = ("", "yes", "true", "1", "y"), ("no", "false", "0", "n", "none")


@dataclass(frozen=True)
class Row:
    key: str
    path: str  # resolved, absolute
    start: float | None = None
    end: float | None = None
    video_id: str = ""
    speaker_id: str = ""
    split: str = ""
    audio: bool = True  # False: video only (stage 2 data)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.audio:  # recorded only for video-only rows: other records stay as they were
            del out["audio"]
        return out


def _seconds(value: object, name: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise PrepError(f"{where}: {name}={value!r} is not a number of seconds") from None
    if out < 0:
        raise PrepError(f"{where}: {name}={out} is negative")
    return out


def default_video_id(path: Path, base: Path) -> str:
    """A source file's video id: `path` (resolved) relative to the manifest's folder `base`,
    in POSIX form; the absolute path when the file lies outside `base`."""
    base = Path(base).resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()


def parse_row(raw: dict, where: str, base: Path, check_paths: bool = True) -> Row:
    """Validate one raw manifest row; `where` ("file:line") names it in errors."""
    unknown = set(raw) - set(COLUMNS)
    if unknown:
        raise PrepError(f"{where}: unknown column(s) {sorted(unknown)}; allowed: {COLUMNS}")
    key = str(raw.get("key") or "").strip()
    if not key:
        raise PrepError(f"{where}: the row has no key")
    if not KEY_PATTERN.match(key):
        raise PrepError(f"{where}: key {key!r} may only contain letters, digits, '_' and '-'")
    src = str(raw.get("path") or "").strip()
    if not src:
        raise PrepError(f"{where}: row {key!r} has no path")
    if "://" in src:
        raise PrepError(
            f"{where}: row {key!r} names a URL ({src}); download it first "
            "and give a local path (fd2talk never downloads)"
        )
    path = Path(src).expanduser()
    path = path if path.is_absolute() else (base / path)
    path = path.resolve()
    if check_paths and not path.is_file():
        raise PrepError(f"{where}: row {key!r}: input file {path} does not exist")
    start = _seconds(raw.get("start"), "start", where)
    end = _seconds(raw.get("end"), "end", where)
    if start is not None and end is not None and end <= start:
        raise PrepError(f"{where}: row {key!r}: end={end} is not after start={start}")
    split = str(raw.get("split") or "").strip()
    if split and split not in SPLITS:
        raise PrepError(f"{where}: row {key!r}: split {split!r} is not one of {SPLITS}")
    video_id = str(raw.get("video_id") or "").strip() or default_video_id(path, base)
    audio = raw.get("audio", True)
    if not isinstance(audio, bool):
        value = str(audio if audio is not None else "").strip().lower()
        if value not in YES + NO:
            raise PrepError(f"{where}: row {key!r}: audio {audio!r} is not yes or no")
        audio = value in YES
    return Row(
        key, str(path), start, end, video_id, str(raw.get("speaker_id") or "").strip(), split, audio
    )


def read_manifest(path: Path, check_paths: bool = True) -> list[Row]:
    """Read a `.csv` or `.jsonl` manifest; keys must be unique."""
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"manifest {path} does not exist")
    base = path.parent
    rows: list[Row] = []
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PrepError(f"{where}: not valid JSON ({e.msg})") from None
                if not isinstance(raw, dict):
                    raise PrepError(f"{where}: a row must be a JSON object")
                rows.append(parse_row(raw, where, base, check_paths))
    elif path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "key" not in reader.fieldnames:
                raise PrepError(f"{path}: the CSV header must name at least key,path")
            for n, raw in enumerate(reader, 2):
                if None in raw:
                    raise PrepError(f"{path}:{n}: more fields than the header has")
                rows.append(parse_row(raw, f"{path}:{n}", base, check_paths))
    else:
        raise PrepError(f"manifest {path}: expected a .csv or .jsonl file")
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row.key in seen:
            raise PrepError(
                f"{path}: key {row.key!r} appears twice (rows {seen[row.key] + 1} "
                f"and {i + 1}); keys must be unique"
            )
        seen[row.key] = i
    if not rows:
        raise PrepError(f"manifest {path} has no rows")
    return rows
