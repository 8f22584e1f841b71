"""`fd2talk-prep manifest hdtf|vfhq|folder`: a manifest from a dataset's published
annotations and the videos downloaded with its tools (thin: the sources build the rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fd2talk.core.skip import PrepError

manifest_app = typer.Typer(
    help="Write a manifest from a dataset's published annotations and the videos you "
    "downloaded with its tools (nothing is downloaded): hdtf, vfhq, or any folder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ManifestOut = Annotated[Path, typer.Option("--out", "-o", help="The manifest to write (.csv).")]
VideosDir = Annotated[
    Path,
    typer.Option(
        "--videos",
        help="Folder of the downloaded videos, "
        "named as the annotations name them (sub-folders are searched).",
    ),
]


def _write_manifest(built, out: Path) -> None:
    from fd2talk.core.atomic import write_bytes

    if not built.rows:
        detail = "; ".join((built.problems + [f"missing {m}" for m in built.missing])[:5])
        raise PrepError(f"no rows: no annotated video was found ({detail})")
    base = out.resolve().parent
    for row in built.rows:  # relative to the manifest when under its folder: the dataset can
        path = Path(row["path"])  # move with it, or be mounted elsewhere (a container)
        if path.is_relative_to(base):
            row["path"] = path.relative_to(base).as_posix()
    write_bytes(out, built.csv_text().encode())
    speakers = len({r["speaker_id"] for r in built.rows if r["speaker_id"]})
    typer.echo(
        f"{out}: {len(built.rows)} rows, {len({r['video_id'] for r in built.rows})} "
        f"videos, {speakers} speakers",
        err=True,
    )
    if built.missing:
        typer.echo(
            f"left out {len(built.missing)} annotated videos not in the videos folder "
            f"(download them first): {', '.join(built.missing[:5])}"
            f"{' ...' if len(built.missing) > 5 else ''}",
            err=True,
        )
    for problem in built.problems[:10]:
        typer.echo(f"skipped: {problem}", err=True)
    if len(built.problems) > 10:
        typer.echo(f"... and {len(built.problems) - 10} more", err=True)


@manifest_app.command("hdtf")
def manifest_hdtf(
    annotations: Annotated[
        Path, typer.Option(help="HDTF's HDTF_dataset folder (its *_annotion_time.txt files).")
    ],
    videos: VideosDir,
    out: ManifestOut = Path("manifest.csv"),
) -> None:
    """HDTF: one row per annotated talking span (key NAME_i, HDTF's clip names); the videos
    are NAME.mp4 as in *_video_url.txt."""
    from fd2talk.pipeline.sources.datasets import hdtf

    _write_manifest(hdtf(annotations, videos), out)


@manifest_app.command("vfhq")
def manifest_vfhq(
    meta: Annotated[
        Path, typer.Option(help="VFHQ's meta-info folder (Clip+VIDEOID+P0+C0+F1-100.txt files).")
    ],
    videos: VideosDir,
    out: ManifestOut = Path("manifest.csv"),
) -> None:
    """VFHQ: one row per clip over its frame range (the source videos are VIDEOID.*); the
    speaker is VIDEOID+P{pid}."""
    from fd2talk.pipeline.sources.datasets import vfhq

    _write_manifest(vfhq(meta, videos), out)


@manifest_app.command("folder")
def manifest_folder(
    root: Annotated[Path, typer.Argument(help="The folder; every video under it is a row.")],
    speaker_regex: Annotated[
        str | None,
        typer.Option(
            "--speaker-regex",
            help="Regex searched in each path relative to the folder; its "
            "`speaker` group (else group 1) is the speaker. Default: the first sub-folder's name "
            "(VoxCeleb: id10001/...).",
        ),
    ] = None,
    out: ManifestOut = Path("manifest.csv"),
) -> None:
    """Every video under a folder (mp4, mkv, mov, avi, webm...), with its speaker."""
    from fd2talk.pipeline.sources.datasets import folder

    _write_manifest(folder(root, speaker_regex), out)
