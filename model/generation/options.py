"""What one generation job may ask for and what it gives back (paper section 3, inference).

`Options` are the choices of `fd2talk-generate`, `fd2talk-eval run` and `fd2talk-app` (each
checked once, here, with the CLI's message); `Noise` and `PoseMode` (and the samplers'
`Solver`, model/solvers.py) name the choices that are words: string enums whose values are
the CLI's words, so they compare, print and serialise as those words. `Reference` is the
portrait and the face crop the models see, `Result` what a job produced. The module imports
no torch, so the command lines can list the choices without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE, FPS
from fd2talk.model.solvers import Solver


class Noise(StrEnum):
    """Stage 2's start noise."""

    shared = "shared"  # one draw for every frame: measured less flicker (bench/generate.py)
    independent = "independent"  # each frame its own draw, seeded by (seed, frame)


class PoseMode(StrEnum):
    """Where the head motion comes from (`--pose`)."""

    generated = "generated"  # stage 1's, from the speech
    still = "still"  # the portrait's own pose throughout
    source = "from:"  # `from:VIDEO_OR_NPZ`: another video's head motion, or a .npz's `pose`


@dataclass(frozen=True)
class Options:
    """What one generation job may change (the CLI's options)."""

    seed: int = 0
    steps: int | None = None  # sampler steps for both stages (None: each model's own default)
    eta: float = 0.0  # 0: deterministic DDIM; 1: ancestral (ddim solver only)
    solver: Solver = Solver.ddim
    batch_size: int = 25  # frames denoised per UNet batch
    pose: str = PoseMode.generated  # "generated" | "still" | "from:VIDEO_OR_NPZ"
    pose_scale: float = 1.0  # head motion amplitude around its mean (0: no head motion)
    expression_scale: float = 1.0  # expression coefficients times this
    noise: Noise = Noise.shared
    face_index: int | None = None  # which face, largest first (None: the largest)
    crop: bool = True  # False: the image is already a face crop framed as training crops
    paste_back: bool = False  # blend the face back into the whole portrait
    size: int = CROP_SIZE  # side of the face video (frames are upscaled to it)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.eta < 0:
            raise UserError(f"--eta must be >= 0, got {self.eta}")
        if self.solver not in set(Solver):
            raise UserError(f"--solver must be ddim or dpm++, not {self.solver!r}")
        if self.solver == Solver.dpm and self.eta > 0:
            raise UserError("--eta > 0 needs --solver ddim (DPM-Solver++ is deterministic)")
        if not (
            self.pose in (PoseMode.generated, PoseMode.still)
            or self.pose.startswith(PoseMode.source)
        ):
            raise UserError(
                f"--pose must be generated, still or from:VIDEO_OR_NPZ, not {self.pose!r}"
            )
        if self.pose_scale < 0 or self.expression_scale < 0:
            raise UserError("--pose-scale and --expression-scale must be >= 0")
        if self.size < 16 or self.size % 2:
            raise UserError(f"--size must be an even number >= 16, got {self.size}")

    @property
    def pose_mode(self) -> PoseMode:
        return PoseMode.source if self.pose.startswith(PoseMode.source) else PoseMode(self.pose)

    @property
    def pose_source(self) -> str:
        """The file of `from:FILE` (pose_mode source)."""
        return self.pose.removeprefix(PoseMode.source)


@dataclass
class Reference:
    """The portrait and the face crop the models see."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, upright
    crop: np.ndarray  # (256, 256, 3) uint8: the crop stage's framing
    box: tuple[int, int, int, int]  # the crop's square in `image` (x0, y0, x1, y1)
    faces: int  # faces found
    pose: np.ndarray | None = None  # (6,) its pose, when measured (`measure_reference`)
    exp: np.ndarray | None = None  # (D_exp,) its expression, when measured


@dataclass
class Result:
    """What one job produced."""

    motion: dict  # exp (F, D_exp), pose (F, 6): what the frames were made from
    timings: dict  # seconds per stage
    frames: int  # video frames (F)
    reference: Reference
    out: Path | None = None
    video: np.ndarray | None = None  # (F, S, S, 3) uint8 model-size frames (keep_frames=True)
    preview_frames: list = field(default_factory=list)  # [(index, (S, S, 3) uint8)]
    speech: np.ndarray | None = None  # the 16 kHz samples the video was made for
    notes: list = field(default_factory=list)  # things the user should know

    @property
    def seconds(self) -> float:
        return self.frames / FPS

    def summary(self) -> str:
        """Seconds of compute per second of video, per stage, and in all."""
        total = sum(self.timings.values())
        per = ", ".join(f"{k} {v / self.seconds:.2f}" for k, v in self.timings.items())
        return (
            f"{self.frames} frames ({self.seconds:.1f} s of video) in {total:.1f} s: "
            f"{total / self.seconds:.2f} s of compute per s of video ({per})"
        )
