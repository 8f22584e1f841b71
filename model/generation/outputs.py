"""Where a job's results go: the video as its frames come, and the files beside it.

- `VideoSink`: each batch of frames straight to the H.264 encoder (media.VideoWriter, the
  speech muxed; pasted into the whole portrait with paste-back), so peak memory does not
  grow with the audio's length (paper section 3, inference, streamed); it also keeps a few
  frames for the preview, moves the progress bar and tells the stage callback;
- `StageClock`: the seconds each stage took (`Result.timings`) and the stage callback;
- `save_coeffs`: the motion the video was made from, as .npz (`--save-coeffs`);
- `save_preview`: a PNG of the reference, frames over time and the mouth opening against
  the speech envelope (`--preview`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fd2talk.core.schema import FPS, SAMPLES_PER_FRAME
from fd2talk.model.generation.options import Options, Result
from fd2talk.model.generation.paste import Paste

PREVIEW_FRAMES = 8  # frames over time in the preview


class StageClock:
    """Seconds per stage, in the order the stages first ran (a job's `Result.timings`), and
    the stage callback `callback(stage, done, total)` (a web page's progress bar, for one)."""

    def __init__(self, callback: Callable | None = None):
        self.timings: dict[str, float] = {}
        self.callback = callback
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """The time since the last lap counts for `stage`."""
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now

    def tell(self, stage: str, done: int, total: int) -> None:
        if self.callback is not None:
            self.callback(stage, done, total)


class VideoSink:
    """A job's frames as they come: to the mp4 at `out` (when given; the portrait-sized video
    with `options.paste_back`, else the frames upscaled to `options.size`), into the preview
    and, with `keep_frames`, into `result.video`; the progress bar and the callback follow.
    Used as a context manager: on any error the half-written video is removed."""

    def __init__(
        self,
        result: Result,
        clock: StageClock,
        out: str | Path | None,
        audio: str | Path,
        options: Options,
        image_size: int,
        keep_frames: bool = False,
        progress: bool = False,
    ):
        from tqdm import tqdm

        from fd2talk.core.media import VideoWriter

        n = result.frames
        self.result, self.clock, self.keep_frames = result, clock, keep_frames
        self.preview = set(
            np.linspace(0, n - 1, min(PREVIEW_FRAMES, n)).round().astype(int).tolist()
        )  # the frames the preview shows
        self.paste = self.writer = None
        if out is not None:
            if options.paste_back:
                self.paste = Paste(result.reference)
                self.writer = VideoWriter(out, self.paste.width, self.paste.height, audio)
            else:
                side = max(options.size, image_size)
                self.writer = VideoWriter(out, image_size, image_size, audio, size=(side, side))
        self.kept: list[np.ndarray] = []
        self.done = 0
        self.bar = tqdm(total=n, desc="frames", unit="frame", disable=not progress, leave=False)

    def write(self, video: np.ndarray) -> None:
        """The next (b, S, S, 3) uint8 frames (the time since the last batch counts as the
        frames')."""
        self.clock.lap("frames")
        for j in range(len(video)):
            if self.done + j in self.preview:
                self.result.preview_frames.append((self.done + j, video[j].copy()))
        if self.keep_frames:
            self.kept.append(video)
        if self.writer is not None:
            self.writer.write(self.paste(video) if self.paste is not None else video)
            self.clock.lap("encode")
        self.done += len(video)
        self.bar.update(len(video))
        self.clock.tell("frames", self.done, self.result.frames)

    def close(self) -> Result:
        """The video finished (its path in `result.out`) and the result complete."""
        if self.writer is not None:
            self.clock.tell("encode", 0, 1)
            self.result.out = self.writer.close()
            self.clock.lap("encode")
        if self.keep_frames:
            self.result.video = np.concatenate(self.kept)
        return self.result

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is not None and self.writer is not None:
                self.writer.abort()
        finally:
            self.bar.close()


def save_coeffs(path: str | Path, result: Result, backend: str, audio: str | Path) -> Path:
    """The motion a video was made from as .npz: exp, pose (denormalised), fps, backend; it
    can drive another job (`--pose from:` reads its pose)."""
    from fd2talk.core.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            exp=result.motion["exp"],
            pose=result.motion["pose"],
            fps=np.int32(FPS),
            backend=np.array(backend),
            audio=np.array(str(audio)),
        )
    return path


def speech_envelope(samples: np.ndarray, frames: int) -> np.ndarray:
    """(frames,) RMS of each 40 ms frame of 16 kHz samples."""
    pad = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    pad[: min(len(samples), len(pad))] = samples[: len(pad)]
    return np.sqrt((pad.reshape(frames, SAMPLES_PER_FRAME) ** 2).mean(1))


def mouth_channel(motion_model) -> tuple[int, str]:
    """The expression channel that shows the mouth opening, and its name."""
    if motion_model.info.coeffs == "mediapipe":
        from fd2talk.pipeline.backends.landmarker import JAW_OPEN

        return JAW_OPEN, "jawOpen"
    # deep3d: the expression basis that varies most (the jaw in BFM)
    k = int(np.argmax(motion_model.stats.std["exp"]))
    return k, f"exp[{k}]"


def save_preview(path: str | Path, result: Result, motion_model) -> Path:
    """A PNG: the reference crop | frames over time (their indices and times) above, the
    mouth-opening channel against the speech envelope below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fd2talk.core.atomic import atomic_path

    frames = result.preview_frames
    cols = 1 + len(frames)
    fig = plt.figure(figsize=(1.6 * cols, 4.2), dpi=110)
    grid = fig.add_gridspec(2, cols, height_ratios=[1, 1.1])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(result.reference.crop)
    ax.set_title("reference", fontsize=8)
    ax.axis("off")
    for c, (i, im) in enumerate(frames, start=1):
        ax = fig.add_subplot(grid[0, c])
        ax.imshow(im)
        ax.set_title(f"frame {i} ({i / FPS:.1f} s)", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    k, name = mouth_channel(motion_model)
    t = np.arange(result.frames) / FPS
    env = speech_envelope(result.speech, result.frames)
    mouth = result.motion["exp"][:, k]

    def unit(a: np.ndarray) -> np.ndarray:
        return (a - a.min()) / max(float(a.max() - a.min()), 1e-8)

    ax.plot(t, unit(env), color="0.6", lw=1, label="speech envelope (RMS)")
    ax.plot(t, unit(mouth), color="C3", lw=1.5, label=f"generated {name}")
    for i, _ in frames:
        ax.axvline(i / FPS, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("seconds")
    ax.set_yticks([])
    ax.set_xlim(0, max(t[-1], 1 / FPS))
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_title("mouth opening vs speech (each scaled to 0-1)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
