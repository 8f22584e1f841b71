"""`fd2talk-prep manifest hdtf|vfhq|folder`: a manifest (manifest.py's columns) from a
dataset's own published annotations and the videos a user downloaded with that dataset's
tools. Nothing is downloaded here; videos the annotations list but the folder lacks are
reported (how many, the first few) and left out.

- HDTF (github.com/MRzzm/HDTF, `HDTF_dataset/`): `{RD,WDA,WRA}_video_url.txt` ("name url"
  per line) and `{RD,WDA,WRA}_annotion_time.txt` ("name.mp4 mm:ss-mm:ss mm:ss-mm:ss ...":
  the talking spans of each video). One row per span, key `name_i` (HDTF's own clip names).
  The speaker: a WDA/WRA name without its trailing digits (`AmyKlobuchar0` and
  `AmyKlobuchar1` are one person); every RD (radio) show is its own.
- VFHQ (liangbinxie.github.io/projects/vfhq): its meta-info folder, one
  `Clip+VIDEOID+P{pid}+C{clip}+F{start}-{end}.txt` per clip, with `FPS: 25.0` among its
  header lines. One row per clip over VFHQ's frame range (its processing script keeps frames
  start+1 .. end-1), the source video `VIDEOID.*` in `--videos`, the speaker `VIDEOID+P{pid}`.
- folder: every video under a folder; the speaker is the first sub-folder's name
  (VoxCeleb's `id10001/...`) or the `speaker` group (else group 1) of `--speaker-regex`
  searched in the path relative to the folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from fd2talk.core.schema import KEY_PATTERN
from fd2talk.core.skip import PrepError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg")
HDTF_SETS = ("RD", "WDA", "WRA")
VFHQ_NAME = re.compile(
    r"^Clip\+(?P<video>[^+]+)\+P(?P<pid>\d+)\+C(?P<clip>\d+)"
    r"\+F(?P<start>\d+)-(?P<end>\d+)$"
)
SPAN = re.compile(r"^(?P<a>\d+):(?P<b>\d{2})(?::(?P<c>\d{2}))?$")


@dataclass
class Built:
    """A manifest's rows, and what was left out and why."""

    rows: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # listed, but no video file
    problems: list[str] = field(default_factory=list)  # annotation lines not understood
    left_out: list[str] = field(default_factory=list)  # listed, not wanted (with the reason)
    columns: tuple[str, ...] = ()  # optional manifest columns the rows fill (split, audio)

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(
            buf,
            fieldnames=["key", "path", "start", "end", "video_id", "speaker_id", *self.columns],
            lineterminator="\n",
        )
        w.writeheader()
        w.writerows(self.rows)
        return buf.getvalue()


def safe_key(text: str) -> str:
    """A manifest key from any name: runs of other characters become `_`."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if not key or not KEY_PATTERN.match(key):
        raise PrepError(f"cannot make a key from {text!r}")
    return key


def _seconds(stamp: str, where: str) -> float:
    m = SPAN.match(stamp)
    if not m:
        raise ValueError(f"{where}: time {stamp!r} is not mm:ss or hh:mm:ss")
    if m.group("c") is not None:
        return int(m.group("a")) * 3600 + int(m.group("b")) * 60 + int(m.group("c"))
    return int(m.group("a")) * 60 + int(m.group("b"))


def _videos(folder: Path) -> dict[str, Path]:
    """Video files under `folder` by stem (the first found wins; sorted, so deterministic)."""
    if not folder.is_dir():
        raise PrepError(f"videos folder {folder} does not exist")
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file():
            out.setdefault(p.stem, p.resolve())
    return out


def hdtf(annotations: Path, videos: Path) -> Built:
    annotations = Path(annotations)
    files = [annotations / f"{s}_annotion_time.txt" for s in HDTF_SETS]
    files = [f for f in files if f.is_file()]
    if not files:
        names = ", ".join(f"{s}_annotion_time.txt" for s in HDTF_SETS)
        raise PrepError(
            f"{annotations}: no HDTF annotation files ({names}); give HDTF's HDTF_dataset folder"
        )
    found = _videos(Path(videos))
    built = Built()
    seen: dict[str, Path] = {}
    for f in files:
        radio = f.name.startswith("RD_")
        for n, line in enumerate(f.read_text(encoding="utf-8-sig").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            name = Path(parts[0]).stem
            where = f"{f}:{n}"
            try:
                spans = [tuple(_seconds(t, where) for t in s.split("-")) for s in parts[1:]]
                if any(len(s) != 2 or s[1] <= s[0] for s in spans) or not spans:
                    raise ValueError(f"{where}: {name}: spans {parts[1:]} are not start-end pairs")
            except ValueError as e:
                built.problems.append(str(e))
                continue
            if name in seen:
                built.problems.append(f"{where}: {name} is also annotated in {seen[name]}")
                continue
            seen[name] = f
            if name not in found:
                built.missing.append(name)
                continue
            speaker = name if radio else (re.sub(r"\d+$", "", name) or name)
            for i, (start, end) in enumerate(spans):
                built.rows.append(
                    {
                        "key": safe_key(f"{name}_{i}"),
                        "path": str(found[name]),
                        "start": f"{start:g}",
                        "end": f"{end:g}",
                        "video_id": name,
                        "speaker_id": speaker,
                    }
                )
    return built


def _vfhq_fps(path: Path) -> float:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[:40]:
        if line.strip().upper().startswith("FPS"):
            return float(line.split(":", 1)[1] if ":" in line else line.split()[-1])
    raise ValueError(f"{path}: no FPS line")


def vfhq(meta: Path, videos: Path) -> Built:
    meta = Path(meta)
    files = sorted(p for p in meta.rglob("*.txt") if VFHQ_NAME.match(p.stem))
    if not files:
        raise PrepError(f"{meta}: no VFHQ meta-info files (Clip+VIDEOID+P0+C0+F1-100.txt)")
    found = _videos(Path(videos))
    built = Built()
    for f in files:
        m = VFHQ_NAME.match(f.stem)
        try:
            fps = _vfhq_fps(f)
            if fps <= 0:
                raise ValueError(f"{f}: FPS {fps}")
        except ValueError as e:
            built.problems.append(str(e))
            continue
        video = m.group("video")
        if video not in found:
            built.missing.append(video)
            continue
        first, last = int(m.group("start")) + 1, int(m.group("end")) - 1
        if last <= first:
            built.problems.append(f"{f}: empty frame range")
            continue
        pid, clip = int(m.group("pid")), int(m.group("clip"))
        built.rows.append(
            {
                "key": safe_key(f"{video}_P{pid}_C{clip}"),
                "path": str(found[video]),
                "start": f"{first / fps:.5f}",
                "end": f"{(last + 1) / fps:.5f}",
                "video_id": video,
                "speaker_id": f"{video}+P{pid}",
            }
        )
    built.missing = sorted(set(built.missing))
    return built


def folder(root: Path, speaker_regex: str | None = None) -> Built:
    root = Path(root)
    if not root.is_dir():
        raise PrepError(f"folder {root} does not exist")
    pattern = None
    if speaker_regex:
        try:
            pattern = re.compile(speaker_regex)
        except re.error as e:
            raise PrepError(f"--speaker-regex {speaker_regex!r}: {e}") from None
    built = Built()
    keys: set[str] = set()
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in VIDEO_SUFFIXES or not p.is_file():
            continue
        rel = p.relative_to(root)
        if pattern is not None:
            m = pattern.search(rel.as_posix())
            speaker = (
                (m.groupdict().get("speaker") or (m.group(1) if m.groups() else "")) if m else ""
            )
            if not speaker:
                built.problems.append(f"{rel}: --speaker-regex does not match")
                continue
        else:
            speaker = rel.parts[0] if len(rel.parts) > 1 else ""
        stem = rel.with_suffix("").as_posix().replace("/", "__")
        try:
            key = safe_key(stem)
        except PrepError:
            key = ""
        if key != stem:  # characters were replaced: a hash keeps distinct names distinct
            key = f"{key}_{hashlib.sha1(stem.encode()).hexdigest()[:8]}".lstrip("_")
        if key in keys:
            built.problems.append(f"{rel}: key {key} taken by another file")
            continue
        keys.add(key)
        built.rows.append(
            {
                "key": key,
                "path": str(p.resolve()),
                "start": "",
                "end": "",
                "video_id": rel.as_posix(),
                "speaker_id": speaker,
            }
        )
    if not built.rows and not built.problems:
        raise PrepError(f"{root}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return built
