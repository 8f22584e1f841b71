"""The status records under `WORK/status/<stage>/`: one `<key>.json` per finished item
(written after its outputs), which items are still pending, and `failures.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path

from fd2talk.core import atomic
from fd2talk.pipeline.runner.work import Item

STATUS_DIR = "status"


def status_dir(work: Path, stage: str) -> Path:
    return Path(work) / STATUS_DIR / stage


def read_status(work: Path, stage: str, key: str) -> dict | None:
    path = status_dir(work, stage) / f"{key}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_complete(rec: dict | None) -> bool:
    """Done or skipped for good; a timeout is retried (maybe with a longer --timeout)."""
    return rec is not None and rec.get("reason") != "timeout"


def is_pending(rec: dict | None, item: Item) -> bool:
    """Not complete, or skipped for inputs that have changed since (e.g. a manifest row now
    marked `audio: no` that was a `no_audio_stream` skip): a skip is a verdict on its inputs."""
    if not is_complete(rec):
        return True
    return (
        rec["status"] == "skipped"
        and "inputs" in rec
        and rec["inputs"] != json.loads(json.dumps(item.payload))
    )


def write_failures(work: Path, stage: str, failed: list[dict]) -> list[dict]:
    """Rebuild failures.jsonl from every skip on record plus this run's failures."""
    sdir = status_dir(work, stage)
    recs = []
    for path in sorted(sdir.glob("*.json")):
        if path.name in ("config.json", "summary.json"):
            continue
        rec = json.loads(path.read_text())
        if rec["status"] == "skipped":
            recs.append(rec)
    recs += sorted(failed, key=lambda r: r["key"])
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs)
    atomic.write_bytes(sdir / "failures.jsonl", text.encode())
    return recs
