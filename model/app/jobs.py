"""The page's jobs: one folder per job (swept by age with Gradio's cache), a request from the
page turned into `Options` and one pipeline call, and the progress the page shows."""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fd2talk.core.errors import UserError
from fd2talk.model.generation.options import PoseMode
from fd2talk.model.solvers import Solver

FROM_VIDEO = "from a video"  # the page's name for `--pose from:` (a video or motion .npz)
POSE_MODES = (PoseMode.generated.value, PoseMode.still.value, FROM_VIDEO)


class JobFolders:
    """One folder per job under `root`; folders older than `max_age` seconds are deleted."""

    def __init__(self, root: Path, max_age: float, cache: Path | None = None):
        self.root = Path(root)
        self.max_age = max_age
        self.cache = cache  # Gradio's cache: its sub-folders are swept by age too
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active: set[Path] = set()

    def new(self) -> Path:
        path = self.root / f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            path.mkdir()
            self._active.add(path)
        return path

    def done(self, path: Path, keep: bool = True) -> None:
        """The job in `path` has ended; `keep=False` deletes its folder (a failed job)."""
        with self._lock:
            self._active.discard(path)
            if not keep:
                shutil.rmtree(path, ignore_errors=True)

    def clean(self, now: float | None = None) -> int:
        """Delete job folders (and Gradio's cached files) whose newest file is older than
        `max_age`, except those of running jobs; returns how many job folders went."""
        now = time.time() if now is None else now
        removed = 0
        with self._lock:
            for d in list(self.root.glob("job-*")):
                if d.is_dir() and d not in self._active and now - _newest(d) > self.max_age:
                    shutil.rmtree(d, ignore_errors=True)
                    removed += 1
            if self.cache is not None and self.cache.is_dir():
                for d in list(self.cache.iterdir()):
                    if d.is_dir() and now - _newest(d) > self.max_age:
                        shutil.rmtree(d, ignore_errors=True)
        return removed


def clean_every(folders: JobFolders, seconds: float) -> None:
    while True:
        time.sleep(seconds)
        try:
            folders.clean()
        except OSError as e:  # a sweep must never end the sweeping
            print(f"fd2talk-app: cleaning {folders.root}: {e}", file=sys.stderr)


def _newest(path: Path) -> float:
    """The newest modification time in `path` (a file vanishing meanwhile is passed over)."""
    newest = 0.0
    for p in [path, *path.rglob("*")]:
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            continue
    return newest


@dataclass
class JobInputs:
    """One request from the page."""

    image: str | None
    audio: str | None
    seed: int = 0
    steps: int | None = None
    solver: str = Solver.ddim.value
    pose: str = PoseMode.generated.value  # one of POSE_MODES
    pose_video: str | None = None  # for "from a video": a video or a --save-coeffs .npz
    pose_scale: float = 1.0
    expression_scale: float = 1.0
    paste_back: bool = False
    crop: bool = True  # False: the portrait is a face crop framed as training crops


@dataclass
class JobOutputs:
    video: Path
    preview: Path
    coeffs: Path
    message: str  # the summary and notes, markdown


def run_job(
    pipe, folders: JobFolders, job: JobInputs, max_seconds: float, callback=None
) -> JobOutputs:
    """One generation as the page asks for it; a bad input raises `UserError` with the
    message the CLI would print."""
    from fd2talk.core import media
    from fd2talk.core.schema import FPS, SAMPLE_RATE
    from fd2talk.model.generation.options import Options
    from fd2talk.model.generation.outputs import save_coeffs, save_preview

    if not job.image:
        raise UserError("upload a portrait first")
    if not job.audio:
        raise UserError("upload or record some speech first")
    if job.pose not in POSE_MODES:
        raise UserError(f"pose must be one of {', '.join(POSE_MODES)}, not {job.pose!r}")
    if job.pose == FROM_VIDEO and not job.pose_video:
        raise UserError(
            "pose 'from a video' needs a video (or a .npz of coefficients) to "
            "take the head motion from"
        )
    # decoded up to just past the limit: an hours-long upload costs no more than that
    seconds = len(media.read_speech(job.audio, limit=max_seconds + 1)) / SAMPLE_RATE
    if seconds > max_seconds:
        raise UserError(
            f"the speech is over {max_seconds:.0f} s long; this app takes up to "
            f"{max_seconds:.0f} s (the server's --max-seconds)"
        )
    pose = f"{PoseMode.source}{job.pose_video}" if job.pose == FROM_VIDEO else job.pose
    steps = int(job.steps) if job.steps else None
    options = Options(
        seed=int(job.seed),
        steps=steps,
        solver=job.solver,
        pose=pose,
        pose_scale=float(job.pose_scale),
        expression_scale=float(job.expression_scale),
        paste_back=bool(job.paste_back),
        crop=bool(job.crop),
    )
    folders.clean()
    folder = folders.new()
    ok = False
    try:
        result = pipe(
            job.image, job.audio, out=folder / "fd2talk.mp4", options=options, callback=callback
        )
        coeffs = save_coeffs(
            folder / "fd2talk_motion.npz", result, pipe.motion_model.info.coeffs, job.audio
        )
        preview = save_preview(folder / "fd2talk_preview.png", result, pipe.motion_model)
        ok = True
    finally:
        folders.done(folder, keep=ok)
    lines = [
        f"**{result.frames} frames ({result.frames / FPS:.2f} s)**, seed {options.seed}: "
        + result.summary().split(": ", 1)[1]
    ]
    lines += [f"- note: {n}" for n in result.notes]
    return JobOutputs(result.out, preview, coeffs, "\n".join(lines))


def progress_callback(progress):
    """A pipeline callback that drives a `gr.Progress`."""
    names = {
        "reference": "reading the portrait and speech",
        "motion": "stage 1: motion",
        "frames": "stage 2: frames",
        "encode": "writing the video",
    }

    def tell(stage: str, done: int, total: int) -> None:
        if stage == "frames":
            progress((done, total), desc=names[stage], unit="frames")
        else:
            progress(None, desc=names.get(stage, stage))

    return tell
