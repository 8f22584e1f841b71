"""The videos `fd2talk-eval` scores: read at 25 fps, paired with their ground truth by name.

Every video is read at 25 fps (ffmpeg's fps filter: another method's 30 fps video is
resampled as its player would show it), at its own size or at the ground truth's (the
generated frames resized to it with area filtering). The speech is the generated video's own
audio track, else the ground truth's. A folder of generated videos is matched to a folder of
ground truths by file stem; a name used twice in one folder, or a generated video without its
ground truth, is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.schema import FPS

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
READ_TIMEOUT = 600.0


def read_video(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB at 25 fps, at `size` (width, height) or the video's own."""
    from fd2talk.core import media
    from fd2talk.core.skip import Skip

    try:
        if size is None:
            p = media.probe(path, need_audio=False)
            size = (p.width, p.height)
        return np.stack(
            list(media.iter_frames(path, size[0], size[1], READ_TIMEOUT, [("fps", FPS)]))
        )
    except Skip as e:
        raise UserError(f"cannot read {path} as a video: {e.detail}") from None
    except ValueError:
        raise UserError(f"{path} has no video frames") from None


def speech_of(*paths: Path | None) -> np.ndarray | None:
    """The 16 kHz speech of the first of `paths` that has an audio stream (None: none has)."""
    from fd2talk.core import media

    for p in paths:
        if p is not None and media.audio_streams(p) > 0:
            return media.read_speech(p)
    return None


def match_videos(generated: Path, reference: Path | None) -> list[tuple[str, Path, Path | None]]:
    """(name, generated, ground truth) matched by file stem; a generated video without its
    ground truth is an error naming it (with `reference`)."""
    if not generated.is_dir():
        raise UserError(f"--generated {generated} is not a folder")
    gens = sorted(
        p
        for p in generated.iterdir()
        if p.suffix.lower() in VIDEO_EXTS and not p.name.startswith(".")
    )
    if not gens:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTS)}) in {generated}")
    _no_duplicates(gens, generated)
    if reference is None:
        return [(p.stem, p, None) for p in gens]
    if not reference.is_dir():
        raise UserError(f"--reference {reference} is not a folder")
    ref_list = [
        p
        for p in reference.iterdir()
        if p.suffix.lower() in VIDEO_EXTS and not p.name.startswith(".")
    ]
    _no_duplicates(ref_list, reference)
    refs = {p.stem: p for p in ref_list}
    missing = [p.name for p in gens if p.stem not in refs]
    if missing:
        raise UserError(
            f"no ground truth in {reference} for {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}: videos are matched by name"
        )
    return [(p.stem, p, refs[p.stem]) for p in gens]


def _no_duplicates(paths: list[Path], folder: Path) -> None:
    seen: dict[str, str] = {}
    for p in sorted(paths):
        if p.stem in seen:
            raise UserError(
                f"{folder} has two videos named {p.stem!r} ({seen[p.stem]}, "
                f"{p.name}): videos are matched by name, keep one"
            )
        seen[p.stem] = p.name
