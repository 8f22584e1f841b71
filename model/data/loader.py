"""Training data: WebDataset shards -> random 25-frame windows -> batches (DESIGN.md section 3).

The training stream is one explicit webdataset pipeline (`train_batches`):

    shard source (resampled, split by node and worker) -> tar samples -> decode the needed
    .npy fields -> random windows of `window` frames -> shuffle buffer -> batch -> with_epoch

Resampling and epochs: the stream of epoch `e` on rank `r`, DataLoader worker `w` is a pure
function of (seed, e, r, w), so a resumed run re-creates epoch `step // epoch_batches` and skips
the batches already used: resume is bit-for-bit. When there are at least as many shards as
(ranks x workers), every (rank, worker) draws only from its own slice of the shard list (split
by node and worker); with fewer shards each draws from all of them with its own seed (the
webdataset recipe for resampled shards, so small datasets still train on many GPUs).

Validation and statistics read whole clips in a fixed order (`iter_clips`); validation cuts
them into consecutive windows (`windows.fixed_windows`).
"""

from __future__ import annotations

import io
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE, MEDIA_KEY, META_KEY
from fd2talk.model.data.windows import RandomWindows, collate

WINDOW = 25  # frames per training window (paper: sequence length 25)
MANIFEST = "manifest.jsonl"
MOTION_FIELDS = ("exp", "pose", "audio", "valid", "id")  # what stage 1 reads from a sample
PREP_HINT = "re-run `fd2talk-prep shard WORK` (or `fd2talk-prep run WORK`) with the current code"


@dataclass(frozen=True)
class DatasetInfo:
    """What the shards hold, read from the first sample's json (fd2talk-prep writes it)."""

    coeffs: str  # "mediapipe" or "deep3d"
    exp_dim: int
    audio_features: str  # "logmel" or "wav2vec2"
    audio_dim: int


def check_same_kind(seen: dict, info: DatasetInfo, what: str) -> None:
    """UserError unless `what`, trained on shards described by `seen` (a DatasetInfo dict),
    fits shards described by `info` (coefficient and audio backends and dims)."""
    for name in ("coeffs", "exp_dim", "audio_features", "audio_dim"):
        if seen[name] != getattr(info, name):
            raise UserError(
                f"{what} was trained on {name}={seen[name]!r} but these shards have "
                f"{name}={getattr(info, name)!r}: use one trained on the same kind "
                "of shards"
            )


def split_shards(shards: str | Path, split: str) -> list[str]:
    """The tar paths of one split, from the shard directory's manifest.jsonl header."""
    root = Path(shards)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise UserError(
            f"{manifest} not found: point --shards at the `shards` folder that "
            "`fd2talk-prep shard` (or `fd2talk-prep run`) wrote"
        )
    with manifest.open() as f:
        header = json.loads(f.readline())
    counts = header.get("counts", {})
    paths = [str(root / name) for name in header.get("shards", []) if name.startswith(f"{split}-")]
    if not counts.get(split) or not paths:
        known = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
        raise UserError(
            f"split {split!r} has no clips in {root} (clips per split: {known}); "
            "add videos to the manifest, or choose another split"
        )
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UserError(f"shard {missing[0]} is listed in {manifest} but missing: {PREP_HINT}")
    return paths


def decode_frames(mp4: bytes, size: int = CROP_SIZE) -> np.ndarray:
    """A shard's `mp4` bytes -> (F, size, size, 3) uint8 RGB frames (ffmpeg via a temp file)."""
    import tempfile

    from fd2talk.core import media

    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(mp4)
        f.flush()
        return media.read_frames(Path(f.name), size, size, timeout=120.0)


def _decode(sample: dict, fields: tuple[str, ...]) -> dict:
    """Raw tar sample (bytes per extension) -> {field: np.ndarray, "key", "meta"}; the field
    `mp4` stays bytes (decode it with `decode_frames` only when needed)."""
    out = {"key": sample["__key__"], "url": sample.get("__url__", "?")}
    for name in fields:
        if name == MEDIA_KEY:
            if MEDIA_KEY not in sample:
                raise UserError(f"sample {out['key']} in {out['url']} has no mp4: {PREP_HINT}")
            out[name] = sample[MEDIA_KEY]
            continue
        raw = sample.get(f"{name}.npy")
        if raw is None:
            raise UserError(
                f"sample {out['key']} in {out['url']} has no '{name}.npy', which this "
                f"stage needs (it has: {', '.join(sorted(k for k in sample if not k.startswith('__')))}); "
                f"{PREP_HINT}"
            )
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
        out[name] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
    out["meta"] = json.loads(sample[META_KEY]) if META_KEY in sample else {}
    return out


def _skip_for(sample: dict, fields: tuple[str, ...]) -> bool:
    """A video-only sample (manifest `audio: no`: stage-2 data, json "audio": false) when the
    consumer needs speech: the lip expert and the motion transformers pass it by."""
    if "audio" not in fields or META_KEY not in sample:
        return False
    meta = sample[META_KEY]
    return (json.loads(meta) if isinstance(meta, bytes | str) else meta).get("audio") is False


def _tar_samples(urls: list[str]) -> Iterator[dict]:
    import webdataset as wds

    for url in urls:
        yield from wds.tarfile_to_samples(handler=wds.reraise_exception)([{"url": url}])


def iter_clips(
    shards: str | Path, split: str, fields: tuple[str, ...] = MOTION_FIELDS
) -> Iterator[dict]:
    """Every clip of a split in a fixed order, decoded (the mp4 is never decoded)."""
    for sample in _tar_samples(split_shards(shards, split)):
        if _skip_for(sample, fields):
            continue
        if MEDIA_KEY not in fields:
            sample.pop(MEDIA_KEY, None)
        yield _decode(sample, fields)


def dataset_info(
    shards: str | Path, split: str = "train", fields: tuple[str, ...] = MOTION_FIELDS
) -> DatasetInfo:
    """Read the first sample of `split`: check it has `fields`, return what the shards hold
    (the audio backend from the first sample with speech; "none" and 0 when no sample has
    any, which only stage 2 accepts)."""
    clip = next(iter_clips(shards, split, fields), None)
    if clip is None and "audio" in fields:
        raise UserError(
            f"no clip of split {split!r} in {shards} has speech (every source was "
            "marked `audio: no`): the lip expert and the motion transformers need "
            "talking videos"
        )
    if clip is None:
        raise UserError(f"split {split!r} of {shards} has no clips: {PREP_HINT}")
    meta = clip["meta"]
    if meta.get("audio") is False:
        meta = next(
            (c["meta"] for c in iter_clips(shards, split, (*fields, "audio"))),
            {**meta, "audio_features": "none", "audio_dim": 0},
        )
    try:
        return DatasetInfo(
            coeffs=meta["coeffs"],
            exp_dim=int(meta["exp_dim"]),
            audio_features=meta["audio_features"],
            audio_dim=int(meta["audio_dim"]),
        )
    except KeyError as err:
        raise UserError(
            f"sample {clip['key']} has no {err.args[0]!r} in its json: {PREP_HINT}"
        ) from None


# ---- windows ---------------------------------------------------------------------------------


# ---- the training stream ---------------------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    window: int = WINDOW
    batch_size: int = 32
    shuffle_buffer: int = 256  # windows held for shuffling
    epoch_batches: int = 500  # batches per epoch and rank (an epoch is a re-seed point)
    workers: int = 0  # DataLoader worker processes
    min_valid: float = 0.8  # fraction of valid frames a training window needs


def _seed(*parts: int) -> int:
    return zlib.crc32(json.dumps(parts).encode())


def _worker() -> tuple[int, int]:
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _ShardSource:
    """Endless random shard urls for this (rank, worker); picklable for DataLoader workers."""

    def __init__(self, urls: list[str], seed: int, epoch: int, rank: int, world: int):
        self.urls, self.seed, self.epoch, self.rank, self.world = urls, seed, epoch, rank, world

    def __call__(self) -> Iterator[dict]:
        worker, workers = _worker()
        slot, slots = self.rank * workers + worker, self.world * workers
        urls = (
            self.urls[slot::slots] if len(self.urls) >= slots else self.urls
        )  # split by node+worker
        rng = random.Random(_seed(self.seed, self.epoch, self.rank, worker, 0))
        while True:
            yield {"url": urls[rng.randrange(len(urls))]}


def _items_stage(src, fields, make_items, seed, epoch, rank):
    rng = None
    for sample in src:
        if rng is None:
            rng = random.Random(_seed(seed, epoch, rank, _worker()[0], 1))
        if _skip_for(sample, fields):
            continue
        if MEDIA_KEY not in fields:
            sample.pop(MEDIA_KEY, None)
        yield from make_items(_decode(sample, fields), rng)


def _shuffle_stage(src, bufsize, seed, epoch, rank):
    import webdataset as wds

    rng = random.Random(_seed(seed, epoch, rank, _worker()[0], 2))
    return wds.shuffle(bufsize, min(bufsize, 32), rng=rng)(src)


def with_speech(urls: list[str]) -> list[str]:
    """The shards holding at least one sample with speech (their stats say so; shards from
    before that count was kept are all speech): a stream that needs `audio` reads only these,
    so no worker's slice can be all video-only samples and wait forever."""
    out = []
    for url in urls:
        stats = Path(url).with_suffix(".stats.json")
        n = json.loads(stats.read_text()).get("speech_samples") if stats.is_file() else None
        if n is None or n > 0:
            out.append(url)
    if not out:
        raise UserError(
            f"none of the {len(urls)} shards holds a clip with speech (every source "
            "was marked `audio: no`): the lip expert and the motion transformers "
            "need talking videos"
        )
    return out


def train_batches(
    urls: list[str],
    config: StreamConfig,
    fields: tuple[str, ...],
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    make_items=None,
) -> Iterator[dict]:
    """Exactly `config.epoch_batches` batches of epoch `epoch` for this rank (dicts of tensors).

    make_items(clip, rng) -> list of items (dicts of numpy arrays) cut from one decoded clip;
    default: `RandomWindows(config.window, config.min_valid)` (stage 1)."""
    import itertools

    import torch.utils.data
    import webdataset as wds

    if "audio" in fields:
        urls = with_speech(urls)
    workers = config.workers
    per_worker = -(-config.epoch_batches // max(1, workers))
    pipeline = wds.DataPipeline(
        _ShardSource(urls, seed, epoch, rank, world),
        wds.tarfile_to_samples(handler=wds.reraise_exception),
        wds.pipelinefilter(_items_stage)(
            fields, make_items or RandomWindows(config.window, config.min_valid), seed, epoch, rank
        ),
        wds.pipelinefilter(_shuffle_stage)(config.shuffle_buffer, seed, epoch, rank),
        wds.batched(config.batch_size, collation_fn=collate, partial=False),
    ).with_epoch(per_worker)
    if workers == 0:
        return itertools.islice(iter(pipeline), config.epoch_batches)
    loader = torch.utils.data.DataLoader(
        pipeline, batch_size=None, num_workers=workers, persistent_workers=False
    )
    return itertools.islice(iter(loader), config.epoch_batches)


def batches_from(
    urls: list[str],
    config: StreamConfig,
    fields: tuple[str, ...],
    seed: int,
    step: int,
    rank: int = 0,
    world: int = 1,
    make_items=None,
) -> Iterator[dict]:
    """The endless batch stream of a run, starting at global step `step` (resume)."""
    epoch, skip = divmod(step, config.epoch_batches)
    while True:
        for i, batch in enumerate(
            train_batches(urls, config, fields, seed, epoch, rank, world, make_items)
        ):
            if i >= skip:
                yield batch
        epoch, skip = epoch + 1, 0


def audio_stage_config(shards: str | Path) -> dict:
    """The `audio` stage settings the train shards were made with (from their stats json), so
    sampling computes features from a new audio file the same way."""
    first = split_shards(shards, "train")[0]
    stats = Path(first).with_suffix(".stats.json")
    if not stats.is_file():
        return {}
    return json.loads(stats.read_text()).get("upstream_config", {}).get("audio", {})
