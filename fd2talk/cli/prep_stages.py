"""`fd2talk-prep`'s per-clip stage commands (clip, crop, coeffs, audio): each builds its
stage's config from its options, every default read from that config dataclass, and runs the
stage over the work directory (resumable, `--part i/n`, a process pool or a Ray cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    Work,
    Workers,
)
from fd2talk.core.defaults import defaults
from fd2talk.core.device import DeviceName
from fd2talk.pipeline.stages.audio import AudioConfig
from fd2talk.pipeline.stages.clip import ClipConfig
from fd2talk.pipeline.stages.coeffs import CoeffsConfig
from fd2talk.pipeline.stages.crop import CropConfig

CLIP, CROP = defaults(ClipConfig), defaults(CropConfig)
COEFFS, AUDIO = defaults(CoeffsConfig), defaults(AudioConfig)


def absolute(path: str | None) -> str | None:
    """An absolute path for a file option (the recorded settings must not depend on the
    directory a command runs from); None stays None."""
    return str(Path(path).expanduser().resolve()) if path else None


def run_stage_command(
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
    run_stage_command(ClipStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


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
        face_model=absolute(face_model),
        s3fd_weights=absolute(s3fd_weights),
        detect_size=detect_size,
        detect_every=detect_every,
        iou_with_initial=iou_with_initial,
        increase=increase,
        min_frames=min_frames,
        min_face=min_face,
        size=size,
        device=device.value,
    )
    run_stage_command(CropStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


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
        absolute(face_model),
        absolute(deep3d_checkpoint),
        absolute(bfm_dir),
        max_invalid,
        batch_size,
        device.value,
        timeout,
        max_roll,
        landmarks.value,
        absolute(fan_weights),
        absolute(s3fd_weights),
    )
    run_stage_command(CoeffsStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)


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
    run_stage_command(AudioStage(cfg), work, workers, part, force, quiet, ray, ray_gpus)
