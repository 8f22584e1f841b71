"""`fd2talk-app`: serve the generation web page (thin: build `AppConfig`, call `serve`). Every
option's default is `AppConfig`'s own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fd2talk.cli.common import Device, DType, FaceModelOpt, run
from fd2talk.core.defaults import defaults
from fd2talk.core.device import DeviceName
from fd2talk.core.errors import UserError
from fd2talk.model.app.web import AppConfig

CFG = defaults(AppConfig)

APP_HELP = """A web page for generation: upload a portrait and speech (or record it), press
Generate, watch and download the video, its preview and its motion coefficients.

    fd2talk-app --model work/model            # then open http://127.0.0.1:7860

The model is loaded once; jobs are queued. It listens on 127.0.0.1 only: to serve other
machines give --host 0.0.0.0 --expose, and read docs/generation.md's warning (anyone who reaches the
port can run jobs on this machine; --auth asks for a password, plain HTTP carries it in clear).
"""
app = typer.Typer(help=APP_HELP, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def serve_app(
    model: Annotated[
        list[Path],
        typer.Option(
            "--model",
            "-m",
            help="Model folder (the demo's "
            "is work/model); repeat it to combine stage 1 and stage 2 folders.",
        ),
    ] = [],  # noqa: B006
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. 127.0.0.1: this machine "
            "only; anything else also needs --expose."
        ),
    ] = CFG["host"],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = CFG["port"],
    expose: Annotated[
        bool,
        typer.Option(
            "--expose",
            help="Allow a --host other machines can reach (see docs/generation.md's warning).",
        ),
    ] = CFG["expose"],
    auth: Annotated[
        str | None,
        typer.Option(
            help="USER:PASSWORD the page asks for (default $FD2TALK_APP_AUTH; none when unset)."
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Where uploads and outputs live (default: "
            "$TMPDIR/fd2talk-app-UID, private to you)."
        ),
    ] = None,
    max_age_hours: Annotated[
        float,
        typer.Option("--max-age-hours", help="Uploads and outputs older than this are deleted."),
    ] = CFG["max_age_hours"],
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest upload.")] = CFG[
        "max_upload_mb"
    ],
    max_seconds: Annotated[
        float, typer.Option("--max-seconds", help="Longest speech a job takes.")
    ] = CFG["max_seconds"],
    concurrency: Annotated[
        int, typer.Option(help="Jobs run at once (each uses every core or the GPU).")
    ] = CFG["concurrency"],
    queue_size: Annotated[
        int,
        typer.Option(
            "--queue-size", help="Jobs that may wait; more are turned away with a message."
        ),
    ] = CFG["queue_size"],
    device: Device = DeviceName(CFG["device"]),
    dtype: Annotated[
        DType, typer.Option(help="fp32; bf16 or fp16 (CUDA) autocast for the frame stage.")
    ] = DType(CFG["dtype"]),
    face_model: FaceModelOpt = None,
    wav2vec2: Annotated[
        str | None,
        typer.Option(
            "--wav2vec2", help="The wav2vec 2.0 folder, for models trained on wav2vec2 features."
        ),
    ] = None,
) -> None:
    """Serve the generation web page."""
    import os

    from fd2talk.model.app.web import AppConfig, serve

    if not model:
        raise UserError("give the model with --model (the demo's is work/model)")
    auth = auth or os.environ.get("FD2TALK_APP_AUTH") or None
    pair = None
    if auth:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise UserError("--auth must be USER:PASSWORD")
        pair = (user, password)
    serve(
        AppConfig(
            model=[str(m) for m in model],
            host=host,
            port=port,
            expose=expose,
            workdir=str(workdir) if workdir else None,
            max_age_hours=max_age_hours,
            max_upload_mb=max_upload_mb,
            max_seconds=max_seconds,
            concurrency=concurrency,
            queue_size=queue_size,
            device=device.value,
            dtype=dtype.value,
            face_model=face_model,
            wav2vec2=wav2vec2,
            auth=pair,
        )
    )


def main() -> None:
    """`fd2talk-app`."""
    run(app)
