"""`fd2talk-prep run`: every stage in order over one work directory (clip -> crop -> coeffs
-> audio -> shard), each resumable, with one summary at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.runner.summary import Summary, print_summary
from fd2talk.pipeline.runner.work import Part
from fd2talk.pipeline.stages.audio import AudioConfig, AudioStage
from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage
from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage
from fd2talk.pipeline.stages.crop import CropConfig, CropStage
from fd2talk.pipeline.stages.shard import ShardConfig, run_shard


@dataclass(frozen=True)
class ChainConfig:
    """The settings of every stage `run_all` runs, one config each."""

    clip: ClipConfig
    crop: CropConfig = CropConfig()
    coeffs: CoeffsConfig = CoeffsConfig()
    audio: AudioConfig = AudioConfig()
    shard: ShardConfig = ShardConfig()


def run_all(
    work: Path,
    config: ChainConfig,
    workers: int = 1,
    part: Part = Part(),
    force: bool = False,
    progress: bool = True,
    cluster: str | None = None,
    cluster_gpus: float = 0.0,
) -> list[Summary]:
    """Run the stages in order; with a `part` of n > 1, stop before `shard` (run it once, when
    every part is done). Returns the stages' summaries."""
    stages = [
        ClipStage(config.clip),
        CropStage(config.crop),
        CoeffsStage(config.coeffs),
        AudioStage(config.audio),
    ]
    summaries = []
    for stage in stages:
        summary = run_stage(
            stage,
            work,
            workers=workers,
            part=part,
            force=force,
            progress=progress,
            cluster=cluster,
            cluster_gpus=cluster_gpus,
        )
        summaries.append(summary)
        if progress:
            print_summary(summary)
    if part.whole:
        summary = run_shard(work, config.shard, progress=progress, force=force)
        summaries.append(summary)
        if progress:
            print_summary(summary)
    return summaries
