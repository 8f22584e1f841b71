"""Stage `shard`: crops + coefficients + audio features -> WebDataset tars (DESIGN.md section 2).

One sample per clip with the schema of `fd2talk.core.schema` (validated before
it is written). Clips are split 70/10/20 by speaker or by video (`split.py`,
`ShardConfig.split_by`) and written in key order to `shards/<split>-%06d.tar`, each
with a `.stats.json` (counts, skips by reason, the split unit used, config, git
revision). `shards/manifest.jsonl` says where every clip went, or why it was left
out; its first line (the header) holds the counts, the unit and groups per split; it is written last, so its presence means the
shards beside it are complete. A re-run with unchanged inputs does nothing; with
changed inputs it rebuilds every shard in `shards/.tmp/` and swaps them in.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fd2talk import __version__
from fd2talk.core import atomic, schema
from fd2talk.core.revision import git_revision
from fd2talk.core.skip import PrepError, Skip, SkipReason
from fd2talk.pipeline.runner.status import read_status, status_dir
from fd2talk.pipeline.runner.summary import Summary
from fd2talk.pipeline.sources.manifest import SPLITS
from fd2talk.pipeline.stages.crop import crop_metadata
from fd2talk.pipeline.stages.split import DEFAULT_RATIOS, plan_splits

OUT_DIR = "shards"
MANIFEST = "manifest.jsonl"
UPSTREAM = ("crop", "coeffs", "audio")


@dataclass(frozen=True)
class ShardConfig:
    maxcount: int = 500  # samples per tar
    maxsize: int = 1_000_000_000  # bytes per tar (a sample is never split)
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    split_by: str = "auto"  # speaker | video | auto (speaker when every row has a speaker_id)


def _stage_config(work: Path, stage: str) -> dict:
    path = status_dir(work, stage) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _upstream_skip(work: Path, stage: str, key: str) -> str | None:
    rec = read_status(work, stage, key)
    if rec and rec["status"] == "skipped":
        return f"{stage}: {rec['reason']}: {rec.get('detail', '')}"
    return None


def _columns(arr: np.ndarray | None) -> int | None:
    """Columns of a (F, D) array; None for another shape (which validation then rejects)."""
    return int(arr.shape[1]) if arr is not None and arr.ndim == 2 else None


def build_sample(work: Path, crop_meta: dict, split: str) -> dict:
    """Assemble and validate one clip's sample; raise `Skip` if a part is missing or disagrees."""
    key = crop_meta["key"]
    mp4 = work / "crops" / f"{key}.mp4"
    coeffs = work / "coeffs" / f"{key}.npz"
    audio = work / "audio" / f"{key}.npy"
    has_audio = crop_meta.get("audio", True) is not False  # False: a video-only source
    for stage, path in (("coeffs", coeffs), ("audio", audio))[: 2 if has_audio else 1]:
        if not path.is_file():
            why = _upstream_skip(work, stage, key) or f"{stage}: not run yet for this clip"
            raise Skip(SkipReason.INCOMPLETE, why)
    sample: dict = {"__key__": schema.check_key(key), schema.MEDIA_KEY: mp4.read_bytes()}
    try:
        with np.load(coeffs, allow_pickle=False) as npz:
            for field in schema.FIELDS:
                name = field.key.removesuffix(".npy")
                if name in npz.files:
                    sample[field.key] = npz[name].astype(field.dtype)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise Skip(SkipReason.DECODE_ERROR, f"{coeffs.name} cannot be read: {e}") from None
    try:
        if has_audio:
            sample["audio.npy"] = np.load(audio, allow_pickle=False).astype("float16")
    except (OSError, ValueError, EOFError) as e:
        raise Skip(SkipReason.DECODE_ERROR, f"{audio.name} cannot be read: {e}") from None
    frames = int(crop_meta["frames"])
    meta = {
        "key": key,
        "clip": crop_meta.get("clip"),
        "fps": schema.FPS,
        "frames": frames,
        "sample_rate": schema.SAMPLE_RATE,
        "size": schema.CROP_SIZE,
        "source": crop_meta.get("source"),
        "start": crop_meta.get("start"),
        "video_id": crop_meta.get("video_id"),
        "speaker_id": crop_meta.get("speaker_id"),
        "split": split,
        "box": crop_meta.get("box"),
        "detector": crop_meta.get("detector"),
        "coeffs": _stage_config(work, "coeffs").get("backend"),
        "exp_dim": _columns(sample.get("exp.npy")),
        **({} if has_audio else {"audio": False}),  # video-only (only then recorded)
        "audio_features": _stage_config(work, "audio").get("backend") if has_audio else None,
        "audio_dim": _columns(sample.get("audio.npy")),
        "pipeline_version": __version__,
        "schema_version": schema.SCHEMA_VERSION,
    }
    sample[schema.META_KEY] = meta
    try:
        n = schema.validate_sample(sample)
    except schema.SchemaError as e:
        raise Skip(SkipReason.INCONSISTENT, str(e)) from None
    if n != frames:
        raise Skip(SkipReason.INCONSISTENT, f"arrays have {n} frames, the crop has {frames}")
    return sample


def _encode(sample: dict) -> dict:
    out = {
        "__key__": sample["__key__"],
        schema.MEDIA_KEY: sample[schema.MEDIA_KEY],
        schema.META_KEY: json.dumps(sample[schema.META_KEY], sort_keys=True).encode(),
    }
    for field in schema.FIELDS:
        if field.key in sample:
            out[field.key] = atomic.npy_bytes(sample[field.key])
    return out


def _fingerprint(work: Path, crops: list[dict], config: ShardConfig) -> str:
    """Changes when any input file (crop json included), the config, an upstream stage's
    config, or the pipeline/schema version changes."""
    h = hashlib.sha256(
        json.dumps(
            {
                "config": asdict(config),
                "pipeline_version": __version__,
                "schema_version": schema.SCHEMA_VERSION,
                "upstream_config": {st: _stage_config(work, st) for st in ("clip",) + UPSTREAM},
            },
            sort_keys=True,
        ).encode()
    )
    for meta in crops:
        key = meta["key"]
        h.update(json.dumps(meta, sort_keys=True).encode())
        for path in (
            work / "crops" / f"{key}.mp4",
            work / "coeffs" / f"{key}.npz",
            work / "audio" / f"{key}.npy",
        ):
            st = path.stat() if path.is_file() else None
            h.update(
                f"{path.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode()
            )
    return h.hexdigest()


def _split_rows(work: Path, crops: list[dict]) -> list[dict]:
    """The manifest rows of every video the clip stage saw (done or skipped), so downstream
    skips never move a video or a speaker to another split; a crop whose video has no clip
    record stands in for its row."""
    rows, seen = [], set()
    for path in sorted(status_dir(work, "clip").glob("*.json")):
        rec = json.loads(path.read_text())
        if "inputs" in rec and "video_id" in rec["inputs"]:
            rows.append({"key": rec["key"], **rec["inputs"]})
            seen.add(rec["inputs"]["video_id"])
    for meta in crops:
        if (meta.get("video_id") or meta["key"]) not in seen:
            rows.append(
                {
                    "key": meta["key"],
                    "video_id": meta.get("video_id") or meta["key"],
                    "speaker_id": meta.get("speaker_id") or "",
                    "split": meta.get("split") or "",
                }
            )
    return rows


class _Writer:
    """Writes one split's shards into a temp folder, rolling over at maxcount/maxsize."""

    def __init__(self, tmp: Path, split: str, config: ShardConfig):
        self.tmp, self.split, self.config = tmp, split, config
        self.shards: list[dict] = []
        self._tar = None
        self._file = None

    def _open(self) -> None:
        import webdataset as wds

        name = f"{self.split}-{len(self.shards):06d}.tar"
        self._file = open(self.tmp / name, "wb")
        self._tar = wds.TarWriter(
            self._file, encoder=False, mtime=0, user="fd2talk", group="fd2talk"
        )
        self.shards.append(
            {
                "shard": name,
                "split": self.split,
                "samples": 0,
                "bytes": 0,
                "frames": 0,
                "valid_frames": 0,
                "videos": Counter(),
                "keys": [],
            }
        )

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()  # TarWriter does not close a file object it was given
        if self._file is not None:
            self._file.close()
        self._tar = self._file = None

    def write(self, sample: dict) -> str:
        encoded = _encode(sample)
        size = sum(len(v) for k, v in encoded.items() if k != "__key__")
        cur = self.shards[-1] if self.shards else None
        if (
            cur is None
            or self._tar is None
            or cur["samples"] >= self.config.maxcount
            or (cur["samples"] and cur["bytes"] + size > self.config.maxsize)
        ):
            self._close()
            self._open()
            cur = self.shards[-1]
        self._tar.write(encoded)
        meta = sample[schema.META_KEY]
        cur["samples"] += 1
        cur["speech_samples"] = cur.get("speech_samples", 0) + ("audio.npy" in sample)
        cur["bytes"] += size
        cur["frames"] += meta["frames"]
        cur["valid_frames"] += int(np.count_nonzero(sample["valid.npy"]))
        cur["videos"][meta["video_id"]] += 1
        cur["keys"].append(sample["__key__"])
        return cur["shard"]

    def close(self) -> list[dict]:
        self._close()
        return self.shards


def describe(work: Path) -> str:
    """One line for the end of a run: samples per split and where the shards are."""
    path = Path(work) / OUT_DIR / MANIFEST
    if not path.is_file():
        return f"no shards in {path.parent}"
    header = json.loads(path.read_text().splitlines()[0])
    counts = ", ".join(f"{split} {header['counts'].get(split, 0)}" for split in SPLITS)
    groups = header.get("groups_per_split", {})
    unit = (
        f"; split by {header['split_by']} ("
        + "/".join(str(groups.get(s, 0)) for s in SPLITS)
        + f" {header['split_by']}s)"
        if "split_by" in header
        else ""
    )
    return (
        f"shards in {path.parent}: {counts} clips in {len(header['shards'])} tars{unit}; "
        f"{MANIFEST} says where every clip went"
    )


def run_shard(
    work: Path, config: ShardConfig = ShardConfig(), progress: bool = True, force: bool = False
) -> Summary:
    """Write every complete clip of `work` into shards; return the summary."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    work = Path(work)
    out = work / OUT_DIR
    crops = list(crop_metadata(work).values())
    if not crops:
        raise PrepError(f"no crops in {work / 'crops'}: run `fd2talk-prep crop {work}` first")
    summary = Summary("shard", total=len(crops))
    fingerprint = _fingerprint(work, crops, config)
    manifest_path = out / MANIFEST
    # The fingerprint (file sizes and mtimes) lives in status/, so shards/ stays deterministic.
    state_path = status_dir(work, "shard") / "state.json"
    if manifest_path.is_file() and state_path.is_file() and not force:
        if json.loads(state_path.read_text()).get("fingerprint") == fingerprint:
            summary.already = len(crops)
            return summary
    plan = plan_splits(_split_rows(work, crops), config.split_by, config.ratios)
    splits = plan.videos
    out.mkdir(parents=True, exist_ok=True)
    atomic.clean_tmp(out)
    tmp = out / atomic.TMP_DIR
    tmp.mkdir()
    writers: dict[str, _Writer] = {}
    rows, skips = [], defaultdict(Counter)
    for meta in tqdm(crops, desc="shard", unit="clip", disable=not progress, dynamic_ncols=True):
        split = splits[meta.get("video_id") or meta["key"]]
        try:
            sample = build_sample(work, meta, split)
        except Skip as skip:
            summary.skipped[skip.reason.value] += 1
            skips[split][skip.reason.value] += 1
            rec = {"key": meta["key"], "stage": "shard", "status": "skipped", **skip.record()}
            summary.failures.append(rec)
            rows.append(
                {
                    "key": meta["key"],
                    "split": split,
                    "shard": None,
                    "reason": skip.reason.value,
                    "detail": skip.detail,
                }
            )
            continue
        writer = writers.setdefault(split, _Writer(tmp, split, config))
        rows.append(
            {
                "key": meta["key"],
                "split": split,
                "shard": writer.write(sample),
                "video_id": meta.get("video_id"),
                "frames": meta["frames"],
            }
        )
        summary.done += 1
    shards = [s for w in writers.values() for s in w.close()]
    unit = {
        "split_by": plan.split_by,
        "split_by_reason": plan.reason,
        "groups_per_split": plan.group_counts(),
    }
    common = {
        "config": asdict(config),
        **unit,
        "git_revision": git_revision(),
        "pipeline_version": __version__,
        "schema_version": schema.SCHEMA_VERSION,
        "upstream_config": {st: _stage_config(work, st) for st in ("clip",) + UPSTREAM},
    }
    for s in shards:
        stats = {
            **s,
            "videos": dict(s["videos"]),
            **common,
            "skipped_in_split": dict(skips[s["split"]]),
            "skipped_total": dict(summary.skipped),
        }
        (tmp / s["shard"].replace(".tar", ".stats.json")).write_text(
            json.dumps(stats, indent=1, sort_keys=True) + "\n"
        )  # staging dir: not final yet
    # Swap in: drop the old manifest first (no manifest = incomplete), then the old shards.
    manifest_path.unlink(missing_ok=True)
    for old in list(out.glob("*.tar")) + list(out.glob("*.stats.json")) + [out / "splits.json"]:
        old.unlink(missing_ok=True)
    for new in sorted(tmp.iterdir()):
        atomic.publish(new, out / new.name)
    atomic.write_json(out / "splits.json", dict(sorted(splits.items())))
    header = {
        "shards": [s["shard"] for s in shards],
        "counts": {
            sp: sum(1 for r in rows if r["split"] == sp and r["shard"])
            for sp in ("train", "val", "test")
        },
        "skipped": dict(summary.skipped),
        **unit,
    }
    lines = [header] + rows
    atomic.write_bytes(
        manifest_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines).encode()
    )
    sdir = status_dir(work, "shard")
    sdir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(
        sdir / "failures.jsonl",
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in summary.failures).encode(),
    )
    summary.seconds = round(time.perf_counter() - t0, 2)
    atomic.write_json(sdir / "summary.json", summary.to_dict())
    atomic.write_json(state_path, {"fingerprint": fingerprint})
    atomic.clean_tmp(out)
    return summary
