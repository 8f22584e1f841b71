"""`fd2talk-eval run`: the paper's protocol on a model's held-out split (paper section 4.1).

Each clip is generated from its first valid frame and its own speech twice: with generated
pose (`out/generated`, with its motion .npz: sync, diversity, beat align) and with the
clip's own pose (`out/own_pose`: PSNR, SSIM, LMD, jaw r and FID against the ground truth in
`out/reference`; the paper fixes the motion for its image metrics). Videos already there are
reused, so a killed run goes on where it stopped. All clips are generated first (the pipeline
uses every core), then scored.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.model.evaluation.pool import score_videos
from fd2talk.model.evaluation.tools import Tools
from fd2talk.model.evaluation.videos import read_video

IMAGE_METRICS = ("psnr", "ssim", "lmd", "jaw_r_true", "_fid")  # taken from the own-pose videos


def run_protocol(
    model: list[Path],
    shards: Path,
    split: str,
    out: Path,
    tools: Tools,
    options=None,
    progress: bool = True,
    workers: int = 1,
) -> tuple[list[dict], dict[str, float]]:
    """The paper's protocol on a model's held-out split: each clip generated from its first
    valid frame and its own speech, once with generated pose (`out/generated`, with its
    motion .npz: sync, diversity, beat align) and once with the clip's own pose
    (`out/own_pose`: PSNR, SSIM, LMD, jaw r against the ground truth, `out/reference`).
    Videos already there are reused, so a killed run goes on where it stopped. All clips are
    generated first (the pipeline uses every core), then scored (`workers` processes).
    Returns the rows and the seconds spent generating and scoring."""
    from tqdm import tqdm

    from fd2talk.core.atomic import atomic_path
    from fd2talk.model.data import loader as data
    from fd2talk.model.generation.options import Options, PoseMode
    from fd2talk.model.generation.outputs import save_coeffs
    from fd2talk.model.generation.pipeline import FD2TalkPipeline

    options = options or Options()
    options = dataclasses.replace(options, crop=False, pose=PoseMode.generated)
    dirs = {k: out / k for k in ("reference", "generated", "own_pose", "poses")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    clips = [
        c
        for c in data.iter_clips(shards, split, ("exp", "pose", "valid", "mp4"))
        if c["meta"].get("audio") is not False
    ]  # video-only clips have no speech to use
    if not clips:
        raise UserError(f"no clips with speech in the {split!r} split of {shards}")
    pipe = None
    timings = {"generate": 0.0, "score": 0.0}
    started = time.perf_counter()
    for c in tqdm(clips, desc=f"generating {split}", unit="clip", disable=not progress):
        key = c["key"]
        ref_mp4, gen_mp4 = dirs["reference"] / f"{key}.mp4", dirs["generated"] / f"{key}.mp4"
        own_mp4, pose_npz = dirs["own_pose"] / f"{key}.mp4", dirs["poses"] / f"{key}.npz"
        if not ref_mp4.is_file():
            with atomic_path(ref_mp4) as tmp:
                tmp.write_bytes(c["mp4"])
        if not pose_npz.is_file():
            with atomic_path(pose_npz) as tmp, open(tmp, "wb") as f:
                np.savez(f, pose=c["pose"])
        if not (gen_mp4.is_file() and gen_mp4.with_suffix(".npz").is_file() and own_mp4.is_file()):
            if pipe is None:
                pipe = FD2TalkPipeline.from_pretrained(
                    *model, device=tools.device, face_model=tools.face_model
                )
            frames = read_video(ref_mp4)
            ref = frames[int(np.flatnonzero(c["valid"])[0])]
            if not (gen_mp4.is_file() and gen_mp4.with_suffix(".npz").is_file()):
                result = pipe(ref, ref_mp4, out=gen_mp4, options=options)
                save_coeffs(
                    gen_mp4.with_suffix(".npz"), result, pipe.motion_model.info.coeffs, ref_mp4
                )
            if not own_mp4.is_file():
                own = dataclasses.replace(options, pose=f"{PoseMode.source}{pose_npz}")
                pipe(ref, ref_mp4, out=own_mp4, options=own)
    timings["generate"] = time.perf_counter() - started
    keys = [c["key"] for c in clips]
    free, t_free = score_videos(
        [(k, dirs["generated"] / f"{k}.mp4", None) for k in keys], tools, progress, workers
    )
    # the own-pose videos' motion is the clip's: no coefficient-based metrics for them
    fixed, t_fixed = score_videos(
        [(k, dirs["own_pose"] / f"{k}.mp4", dirs["reference"] / f"{k}.mp4") for k in keys],
        tools,
        progress,
        workers,
        coeffs={k: None for k in keys},
    )
    timings["score"] = t_free + t_fixed
    rows = []
    for a, b in zip(free, fixed, strict=True):
        row = dict(a)
        row.update({k: b[k] for k in IMAGE_METRICS if k in b})
        rows.append(row)
    return rows, timings
