"""`fd2talk-prep manifest hdtf|vfhq|folder|corpus`: a manifest from a dataset's published
annotations and the videos downloaded with its tools (thin: the sources build the rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fd2talk.core.skip import PrepError

manifest_app = typer.Typer(
    help="Write a manifest from a dataset's published annotations and the videos you "
    "downloaded with its tools (nothing is downloaded): hdtf, vfhq, any folder, or a media folder indexed by its own manifest.csv (corpus).",
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
    if "split" in built.columns:
        for split in ("train", "val", "test"):
            rows = [r for r in built.rows if r["split"] == split]
            speech = sum(r.get("audio") != "no" for r in rows)
            people = len({r["speaker_id"] for r in rows})
            typer.echo(
                f"  {split}: {len(rows)} rows ({speech} with speech), {people} people", err=True
            )
    if built.missing:
        typer.echo(
            f"left out {len(built.missing)} annotated videos not in the videos folder "
            f"(download them first): {', '.join(built.missing[:5])}"
            f"{' ...' if len(built.missing) > 5 else ''}",
            err=True,
        )
    if built.left_out:
        typer.echo(
            f"left out {len(built.left_out)}: {', '.join(built.left_out[:3])}"
            f"{' ...' if len(built.left_out) > 3 else ''}",
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


@manifest_app.command("corpus")
def manifest_corpus(
    root: Annotated[
        Path, typer.Argument(help="The media folder, with its manifest.csv (../shared/corpus).")
    ],
    test: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated identities held out for testing (never trained on); "
            "default: the six dev identities in pipeline/sources/corpus.py."
        ),
    ] = None,
    val: Annotated[
        str | None,
        typer.Option(help="Comma-separated validation identities; default: corpus.py's three."),
    ] = None,
    synthetic: Annotated[
        bool, typer.Option(help="Keep the clips whose note starts with `synthetic:`.")
    ] = True,
    out: ManifestOut = Path("manifest.csv"),
) -> None:
    """A media folder indexed by its own manifest.csv (identity, kind, audio, note): talking
    clips with speech for both stages, the other clips video-only (audio: no), every split
    pinned by identity."""
    from fd2talk.pipeline.sources.corpus import DEV_IDENTITIES, VAL_IDENTITIES, corpus

    def names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        return default if text is None else tuple(n.strip() for n in text.split(",") if n.strip())

    _write_manifest(
        corpus(root, names(test, DEV_IDENTITIES), names(val, VAL_IDENTITIES), synthetic), out
    )
