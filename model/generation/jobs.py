"""Batch generation: `fd2talk-generate --jobs pairs.csv`, one video per row, the model loaded once.

The CSV has a header with at least `image`, `audio` and `out` (relative paths are read from
the CSV's folder). A row whose `out` exists is skipped (so a killed batch resumes where it
stopped); a row that fails is recorded with its reason and the others go on. The outcome of
every row goes to `<jobs>.results.csv` (status ok|skipped|failed, reason, seconds), rewritten
atomically after each row.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from fd2talk.core.errors import UserError

COLUMNS = ("image", "audio", "out")


def read_jobs(path: Path) -> list[dict]:
    """The rows of a jobs CSV, paths resolved against its folder."""
    if not path.is_file():
        raise UserError(f"jobs file {path} not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                f"{path}: the header lacks {', '.join(missing)} (need columns {','.join(COLUMNS)})"
            )
        rows = []
        for i, row in enumerate(reader, start=2):
            if not any((row.get(c) or "").strip() for c in COLUMNS):
                continue  # a blank line
            rows.append(
                {
                    "line": i,
                    **{c: _resolve(path.parent, (row.get(c) or "").strip()) for c in COLUMNS},
                }
            )
    return rows


def _resolve(base: Path, value: str) -> str:
    if not value:
        return ""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _write_results(path: Path, results: list[dict]) -> None:
    from fd2talk.core.atomic import write_bytes

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["line", *COLUMNS, "status", "reason", "seconds"])
    w.writeheader()
    w.writerows(results)
    write_bytes(path, buf.getvalue().encode())


def run_jobs(pipe, jobs: Path, options, progress: bool = True) -> int:
    """Run every row; returns the number of failed rows."""
    import typer

    rows = read_jobs(jobs)
    out_path = jobs.with_name(jobs.stem + ".results.csv")
    results = []
    for k, row in enumerate(rows, start=1):
        rec = {**{c: row[c] for c in ("line", *COLUMNS)}, "reason": "", "seconds": ""}
        start = time.perf_counter()
        if not all(row[c] for c in COLUMNS):
            rec.update(status="failed", reason="empty image, audio or out")
        elif Path(row["out"]).exists():
            rec.update(status="skipped", reason="out exists")
        else:
            try:
                result = pipe(
                    row["image"], row["audio"], out=row["out"], options=options, progress=progress
                )
                rec.update(status="ok", reason="; ".join(result.notes))
            except UserError as e:
                rec.update(status="failed", reason=str(e))
        rec["seconds"] = f"{time.perf_counter() - start:.1f}"
        results.append(rec)
        _write_results(out_path, results)
        if progress:
            colour = {"ok": None, "skipped": typer.colors.BLUE, "failed": typer.colors.RED}
            typer.secho(
                f"[{k}/{len(rows)}] {rec['status']}: {row['out']}"
                + (f" ({rec['reason']})" if rec["reason"] else ""),
                fg=colour[rec["status"]],
                err=rec["status"] == "failed",
            )
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "skipped", "failed")}
    if progress:
        typer.echo(
            f"jobs: {counts['ok']} made, {counts['skipped']} skipped (out exists), "
            f"{counts['failed']} failed; per row: {out_path}"
        )
    return counts["failed"]
