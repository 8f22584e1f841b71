"""`fd2talk-generate`: portrait + speech -> a talking-head video (thin: build `Options`, call
`FD2TalkPipeline`). Every option's default is `Options`'s own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fd2talk.cli.common import Device, DType, FaceModelOpt, Quiet, run
from fd2talk.core.defaults import defaults
from fd2talk.core.device import DeviceName
from fd2talk.core.errors import UserError
from fd2talk.model.generation.options import Noise, Options
from fd2talk.model.solvers import Solver

OPT = defaults(Options)

GEN_HELP = """Portrait + speech -> a talking-head video (H.264, 25 fps, the speech muxed as AAC).

    fd2talk-generate --image portrait.jpg --audio speech.wav --out video.mp4 --model work/model
    fd2talk-generate --jobs pairs.csv --model work/model      # image,audio,out per row

The video lasts as long as the audio (to the frame, the last partial 40 ms included). Frames
stream to the encoder, so long audio needs no more memory than short.
"""
app = typer.Typer(help=GEN_HELP, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def generate(
    image: Annotated[
        Path | None,
        typer.Option(
            "--image",
            "-i",
            help="The portrait (any image "
            "Pillow reads: JPEG, PNG, grey, RGBA, 16-bit; EXIF rotation applied).",
        ),
    ] = None,
    audio: Annotated[
        Path | None,
        typer.Option(
            "--audio",
            "-a",
            help="The speech: any file ffmpeg reads (wav, mp3, m4a, flac, a video's sound).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The video to write (.mp4).")
    ] = None,
    model: Annotated[
        list[Path],
        typer.Option(
            "--model",
            "-m",
            help="Model folder "
            "(`fd2talk-train export`; the demo's is work/model); repeat it to combine "
            "run directories or folders holding stage 1 and stage 2.",
        ),
    ] = [],  # noqa: B006
    jobs: Annotated[
        Path | None,
        typer.Option(
            "--jobs",
            help="A CSV with columns image,audio,out: "
            "every row one video, the model loaded once; rows whose out exists are "
            "skipped; a failed row is recorded (JOBS.results.csv) and the rest go on.",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of all sampling noise (same seed, same video).")
    ] = OPT["seed"],
    steps: Annotated[
        int | None,
        typer.Option(
            help="Sampler steps for both stages (default: the "
            "model's own, 50 for the paper preset). dpm++ is good at 10-20."
        ),
    ] = OPT["steps"],
    eta: Annotated[
        float, typer.Option(help="0: deterministic DDIM; up to 1: ancestral noise (ddim only).")
    ] = OPT["eta"],
    solver: Annotated[
        Solver,
        typer.Option(
            help="ddim: the paper's eq. 5; dpm++: DPM-Solver++ (2nd order), a few steps do."
        ),
    ] = Solver(OPT["solver"]),
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            help="Frames denoised per batch (memory vs speed; does not change the frames).",
        ),
    ] = OPT["batch_size"],
    device: Device = DeviceName.auto,
    dtype: Annotated[
        DType,
        typer.Option(help="fp32; bf16 (CUDA or CPU) or fp16 (CUDA) autocast for the frame stage."),
    ] = DType.fp32,
    pose: Annotated[
        str,
        typer.Option(
            help="generated (stage 1's head motion), still (the "
            "portrait's own pose throughout) or from:VIDEO_OR_NPZ (another video's "
            "head motion, or a .npz with a `pose` array such as --save-coeffs writes)."
        ),
    ] = str(OPT["pose"]),
    pose_scale: Annotated[
        float,
        typer.Option(
            "--pose-scale", help="Head motion around its mean times this (0: none, >1: livelier)."
        ),
    ] = OPT["pose_scale"],
    expression_scale: Annotated[
        float,
        typer.Option(
            "--expression-scale", help="Expression coefficients times this (mouth and face motion)."
        ),
    ] = OPT["expression_scale"],
    noise: Annotated[
        Noise,
        typer.Option(
            help="Start noise: shared by all frames (less "
            "flicker, measured) or independent per frame."
        ),
    ] = Noise(OPT["noise"]),
    face_index: Annotated[
        int | None,
        typer.Option(
            "--face-index", help="Which face of a group photo, 0 = the largest (default)."
        ),
    ] = OPT["face_index"],
    crop: Annotated[
        bool,
        typer.Option(
            "--crop/--no-crop",
            help="Find and frame the face as "
            "training crops were (default); --no-crop: the image is such a square crop "
            "already.",
        ),
    ] = OPT["crop"],
    paste_back: Annotated[
        bool,
        typer.Option(
            "--paste-back",
            help="Blend the face back into the whole portrait (feathered); best with --pose still.",
        ),
    ] = OPT["paste_back"],
    size: Annotated[
        int,
        typer.Option(help="Side of the face video; smaller model frames are upscaled (lanczos)."),
    ] = OPT["size"],
    save_coeffs: Annotated[
        Path | None,
        typer.Option("--save-coeffs", help="Also write the motion (exp, pose) as .npz."),
    ] = None,
    preview: Annotated[
        Path | None,
        typer.Option(
            "--preview",
            help="Also write a PNG: reference "
            "| frames over time, and the mouth opening against the speech.",
        ),
    ] = None,
    face_model: FaceModelOpt = None,
    wav2vec2: Annotated[
        str | None,
        typer.Option(
            "--wav2vec2",
            help="The wav2vec 2.0 folder, for "
            "models trained on wav2vec2 features (default: the path they record).",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Generate talking-head videos from a portrait and speech."""
    from fd2talk.model.generation import outputs
    from fd2talk.model.generation.options import Options
    from fd2talk.model.generation.pipeline import FD2TalkPipeline

    if not model:
        raise UserError(
            "give the model with --model (the demo's is work/model; "
            "`fd2talk-train export` writes one)"
        )
    options = Options(
        seed=seed,
        steps=steps,
        eta=eta,
        solver=solver,
        batch_size=batch_size,
        pose=pose,
        pose_scale=pose_scale,
        expression_scale=expression_scale,
        noise=noise,
        face_index=face_index,
        crop=crop,
        paste_back=paste_back,
        size=size,
    )
    if jobs is None and (image is None or audio is None or out is None):
        raise UserError("give --image, --audio and --out (or --jobs CSV)")
    pipe = FD2TalkPipeline.from_pretrained(
        *model, device=device.value, dtype=dtype.value, face_model=face_model, wav2vec2=wav2vec2
    )
    if jobs is not None:
        from fd2talk.model.generation.jobs import run_jobs

        failed = run_jobs(pipe, jobs, options, progress=not quiet)
        sys.exit(1 if failed else 0)
    result = pipe(image, audio, out=out, options=options, progress=not quiet)
    extra = []
    if save_coeffs:
        backend = pipe.motion_model.info.coeffs
        extra.append(f"coefficients {outputs.save_coeffs(save_coeffs, result, backend, audio)}")
    if preview:
        extra.append(f"preview {outputs.save_preview(preview, result, pipe.motion_model)}")
    for note in result.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    if not quiet:
        typer.echo(f"video {result.out}" + "".join(f"\n{e}" for e in extra))
        typer.echo(result.summary())


def main() -> None:
    """`fd2talk-generate`."""
    run(app)
