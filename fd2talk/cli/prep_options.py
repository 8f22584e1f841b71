"""The options `fd2talk-prep`'s commands share (work dir, workers, parts, Ray, force, quiet,
face model, device) and the choices of its enumerated options."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fd2talk.core.device import DeviceName

Work = Annotated[Path, typer.Argument(help="Work directory holding every stage's outputs.")]
Workers = Annotated[int, typer.Option("--workers", "-j", help="Worker processes.")]
PartOpt = Annotated[
    str,
    typer.Option(
        "--part", help="Take slice i of n (0-based, e.g. 3/8): SLURM arrays, many machines."
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run the clips as Ray tasks: `local` (a Ray cluster on this machine with "
        "--workers CPUs), `auto` (the cluster `ray start` made here) or an address "
        "(ray://HEAD:10001). Dynamic scheduling, lost workers retried; WORK must be on storage "
        "every node sees.",
    ),
]
RayGpus = Annotated[
    float,
    typer.Option(
        "--ray-gpus",
        min=0.0,
        help="With --ray: the share of a GPU each task asks Ray for, for "
        "backends on CUDA (s3fd, deep3d, wav2vec2): 0.25 runs four tasks a GPU.",
    ),
]
Force = Annotated[
    bool,
    typer.Option("--force", help="Redo outputs made with different settings instead of refusing."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")]
FaceModel = Annotated[
    str | None,
    typer.Option(
        "--face-model",
        help="MediaPipe face_landmarker.task (default: $FD2TALK_FACE_MODEL, "
        "then ~/.cache/fd2talk/face_landmarker.task).",
    ),
]


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


SplitByOpt = Annotated[
    SplitBy,
    typer.Option(
        "--split-by",
        help="Split unit: speaker (no person in two splits), video (the rows of "
        "one source file together), or auto (speaker when every manifest row has a speaker_id; "
        "else video).",
    ),
]


Device = Annotated[
    DeviceName, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")
]
