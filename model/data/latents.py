"""Stage `latents`: store the fine-tuned autoencoder's latent of every frame in the shards.

Optional, after `shard` (paper section 3.4.2; DESIGN.md sections 2 and 3): frame-UNet
training reads `latent.npy` instead of running the encoder every step, and works without it.
For every tar listed in `shards/manifest.jsonl`, each sample gets

    latent.npy   float16 (F, d, 64, 64): RefAutoencoder.encode of every frame of its mp4
                 (frames decoded by `fd2talk.model.data.loader.decode_frames`, in [-1, 1]),
    json         the same dict plus "latent": {"autoencoder": fingerprint, "channels": d,
                 "size": 64, "scale": LATENT_SCALE} (`fd2talk.model.data.latent_cache`),

and every other member stays byte-identical (same tar headers, same order; `latent.npy` sits
where webdataset's sorted TarWriter puts it). The same entry then goes into `<tar>.stats.json`,
and after the last tar into the manifest header, so a trainer checks the whole cache from
small files (`latent_cache.check_latents`).

Resuming: a tar is rewritten into `shards/.tmp/` and renamed over the old one, then its stats
are updated. A re-run skips tars whose stats (or, after a kill between the two, whose samples)
already carry this autoencoder's latents; latents of a different autoencoder are refused before
anything is written, unless `--force` replaces them.
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fd2talk.core import atomic
from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE, MEDIA_KEY, META_KEY
from fd2talk.core.skip import PrepError, Skip
from fd2talk.model.data import latent_cache
from fd2talk.pipeline.runner.status import status_dir
from fd2talk.pipeline.stages.shard import MANIFEST, OUT_DIR

STAGE = "latents"
PIXEL_SCALE = 127.5  # uint8 -> [-1, 1]: x / 127.5 - 1


@dataclass(frozen=True)
class LatentsConfig:
    autoencoder: str = ""  # directory written by RefAutoencoder.save (fine-tuned autoencoder)
    device: str = "auto"  # auto: CUDA when present
    batch_size: int = 32  # frames per encoder forward


@dataclass
class LatentsSummary:
    """What one run did."""

    fingerprint: str = ""
    device: str = ""
    tars: int = 0  # tars in the shard folder
    already: int = 0  # tars that carried these latents before this run
    rewritten: int = 0  # tars rewritten with new latents
    clips: int = 0  # clips encoded by this run
    frames: int = 0  # frames encoded by this run
    seconds: float = 0.0

    def line(self) -> str:
        rate = f", {self.seconds / self.clips:.2f} s/clip" if self.clips else ""
        return (
            f"latents: autoencoder {self.fingerprint[:12]} on {self.device}: "
            f"{self.rewritten} of {self.tars} tars rewritten ({self.clips} clips, "
            f"{self.frames} frames{rate}), {self.already} already had these latents; "
            f"{self.seconds:.1f} s"
        )


# ---- tar members -----------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, str]:
    """`dir/key.ext.npy` -> (`dir/key`, `ext.npy`): webdataset's key/extension rule."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def iter_tar_samples(
    tf: tarfile.TarFile,
) -> Iterator[tuple[str, list[tuple[tarfile.TarInfo, bytes]]]]:
    """(key, [(member, data), ...]) per sample, members in tar order (consecutive keys)."""
    key, members = None, []
    for info in tf:
        if not info.isfile():
            continue
        name_key, _ = _split_name(info.name)
        if members and name_key != key:
            yield key, members
            members = []
        key = name_key
        members.append((info, tf.extractfile(info).read()))
    if members:
        yield key, members


def _member(members: list[tuple[tarfile.TarInfo, bytes]], ext: str) -> bytes | None:
    for info, data in members:
        if _split_name(info.name)[1] == ext:
            return data
    return None


def _replace(
    members: list[tuple[tarfile.TarInfo, bytes]], ext: str, data: bytes
) -> list[tuple[tarfile.TarInfo, bytes]]:
    """`members` with `ext`'s data replaced, or added at its sorted place (as TarWriter
    orders extensions) with the header of the sample's first member (mtime, owner, mode)."""
    exts = [_split_name(info.name)[1] for info, _ in members]
    out = list(members)
    if ext in exts:
        i = exts.index(ext)
        info = copy.copy(members[i][0])
        info.size = len(data)
        out[i] = (info, data)
    else:
        i = next((i for i, e in enumerate(exts) if e > ext), len(exts))
        out.insert(i, _new_info(members[0][0], ext, data))
    return out


def _new_info(like: tarfile.TarInfo, ext: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = copy.copy(like)
    info.name = f"{_split_name(like.name)[0]}.{ext}"
    info.size = len(data)
    info.pax_headers = {}
    return info, data


def _sample_entries(tar: Path) -> list[dict | None]:
    """The latent entry of every sample's json in `tar` (reads the json members only)."""
    out = []
    with tarfile.open(tar, "r") as tf:
        for info in tf:
            if info.isfile() and _split_name(info.name)[1] == META_KEY:
                out.append(json.loads(tf.extractfile(info).read()).get(latent_cache.ENTRY_KEY))
    return out


# ---- encoding --------------------------------------------------------------------------------


def encode_frames(model, frames: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB -> (F, d, H/f, W/f) float16 latents, `batch_size` frames a pass."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch_size])).to(device)
            x = x.permute(0, 3, 1, 2).float() / PIXEL_SCALE - 1.0  # (B, 3, H, W) in [-1, 1]
            out.append(model.encode(x).cpu().numpy())  # (B, d, h, w) float32
    latents = np.concatenate(out).astype(np.float16)  # (F, d, h, w)
    return latents


def _encode_sample(
    model, key: str, members: list, entry: dict, config: LatentsConfig, device: str, where: str
) -> tuple[list, int]:
    """One sample's members with `latent.npy` and the json's latent entry; its frame count."""
    from fd2talk.model.data.loader import decode_frames

    mp4, raw_meta = _member(members, MEDIA_KEY), _member(members, META_KEY)
    if mp4 is None or raw_meta is None:
        raise PrepError(
            f"{where}: sample {key} lacks its mp4 or json: rebuild the shards with "
            "`fd2talk-prep shard WORK --force`"
        )
    meta = json.loads(raw_meta)
    try:
        frames = decode_frames(mp4, CROP_SIZE)  # (F, 256, 256, 3) uint8
    except Skip as e:
        raise PrepError(
            f"{where}: the mp4 of sample {key} cannot be decoded ({e}): rebuild the "
            "shards with `fd2talk-prep shard WORK --force`"
        ) from None
    if len(frames) != meta.get("frames") or not len(frames):
        raise PrepError(
            f"{where}: the mp4 of sample {key} has {len(frames)} frames, its json "
            f"says {meta.get('frames')}: rebuild the shards with "
            "`fd2talk-prep shard WORK --force`"
        )
    latents = encode_frames(model, frames, config.batch_size, device)  # (F, d, 64, 64) float16
    if not np.isfinite(latents).all():
        raise PrepError(
            f"autoencoder {config.autoencoder} gives non-finite latents (float16 "
            f"overflow?) for sample {key} in {where}"
        )
    meta[latent_cache.ENTRY_KEY] = entry
    members = _replace(members, latent_cache.LATENT_FIELD, atomic.npy_bytes(latents))
    members = _replace(members, META_KEY, json.dumps(meta, sort_keys=True).encode())
    return members, len(frames)


def _rewrite_tar(
    tar: Path, model, entry: dict, config: LatentsConfig, device: str, bar
) -> tuple[int, int]:
    """Rewrite `tar` with latents (temp file, then rename); return (clips, frames)."""
    clips = frames = 0
    with (
        atomic.atomic_path(tar) as tmp,
        tarfile.open(tar, "r") as src,
        tarfile.open(tmp, "w") as dst,
    ):
        for key, members in iter_tar_samples(src):
            members, n = _encode_sample(model, key, members, entry, config, device, tar.name)
            for info, data in members:
                dst.addfile(info, io.BytesIO(data))
            clips, frames = clips + 1, frames + n
            bar.update(1)
    return clips, frames


# ---- the stage -------------------------------------------------------------------------------


def _load(config: LatentsConfig):
    from fd2talk.model.nets.autoencoder import RefAutoencoder

    try:
        return RefAutoencoder.load(config.autoencoder)
    except UserError as e:
        raise PrepError(str(e)) from None


def _tar_state(tar: Path, entry: dict) -> str:
    """What `tar` holds: "done" (its stats name these latents), "stats" (its samples do but its
    stats not yet: killed between the two), "other" (latents of another autoencoder) or "todo"."""
    stats_entry = latent_cache.tar_entry(tar)
    if stats_entry == entry:
        return "done"
    samples = _sample_entries(tar)
    if samples and all(e == entry for e in samples):
        return "stats"
    if stats_entry is not None or any(e is not None for e in samples):
        return "other"
    return "todo"


def _write_header(manifest: Path, entry: dict | None) -> None:
    """Set (or, with None, drop) the manifest header's latent entry; rows stay as they are."""
    lines = manifest.read_bytes().decode().splitlines(keepends=True)
    header = json.loads(lines[0])
    if header.get(latent_cache.ENTRY_KEY) == entry:
        return
    header.pop(latent_cache.ENTRY_KEY, None)
    if entry is not None:
        header[latent_cache.ENTRY_KEY] = entry
    lines[0] = json.dumps(header, sort_keys=True) + "\n"
    atomic.write_bytes(manifest, "".join(lines).encode())


def run_latents(
    work: Path, config: LatentsConfig, progress: bool = True, force: bool = False
) -> LatentsSummary:
    """Add the latents of `config.autoencoder` to every shard of `work`; return what it did."""
    from tqdm import tqdm

    from fd2talk.core.device import resolve_device
    from fd2talk.model.nets.autoencoder import LATENT_SCALE

    t0 = time.perf_counter()
    if config.batch_size < 1:
        raise PrepError(f"--batch-size must be at least 1, not {config.batch_size}")
    out = Path(work) / OUT_DIR
    manifest = out / MANIFEST
    if not manifest.is_file():
        raise PrepError(
            f"no shards in {out} ({MANIFEST} missing): run `fd2talk-prep shard {work}` first"
        )
    header = json.loads(manifest.read_text().splitlines()[0])
    tars = [out / name for name in header.get("shards", [])]
    missing = [t for t in tars if not t.is_file()]
    if missing:
        raise PrepError(
            f"{missing[0]} is listed in {manifest} but missing: rebuild the shards "
            f"with `fd2talk-prep shard {work} --force`"
        )
    device = resolve_device(config.device)
    model = _load(config).to(device).eval()
    entry = latent_cache.cache_entry(
        model.fingerprint(), model.latent_channels, CROP_SIZE // model.factor, LATENT_SCALE
    )
    summary = LatentsSummary(fingerprint=entry["autoencoder"], device=device, tars=len(tars))
    states = {tar: _tar_state(tar, entry) for tar in tars}
    other = [tar for tar, state in states.items() if state == "other"]
    if other and not force:
        held = latent_cache.tar_entry(other[0]) or next(
            e for e in _sample_entries(other[0]) if e not in (None, entry)
        )
        raise PrepError(
            f"{other[0]} (and {len(other) - 1} more tars) hold latents of another autoencoder "
            f"({str(held.get('autoencoder'))[:12]}, {held.get('channels')} channels), not of "
            f"{config.autoencoder} ({entry['autoencoder'][:12]}): pass --force to replace them"
        )
    todo = [tar for tar, state in states.items() if state in ("todo", "other")]
    summary.already = sum(state == "done" for state in states.values())
    if todo or any(state == "stats" for state in states.values()):
        _write_header(manifest, None)  # no header entry while the tars disagree
        atomic.clean_tmp(out)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[1:]]
    total = sum(1 for r in rows if r.get("shard") in {t.name for t in todo})
    with tqdm(
        total=total, desc=STAGE, unit="clip", disable=not progress, dynamic_ncols=True
    ) as bar:
        for tar, state in states.items():
            if state == "done":
                continue
            if state != "stats":
                bar.set_postfix_str(tar.name)
                clips, frames = _rewrite_tar(tar, model, entry, config, device, bar)
                summary.rewritten += 1
                summary.clips += clips
                summary.frames += frames
            stats_file = latent_cache.stats_path(tar)
            stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
            atomic.write_json(stats_file, {**stats, latent_cache.ENTRY_KEY: entry})
    _write_header(manifest, entry)
    atomic.clean_tmp(out)
    summary.seconds = round(time.perf_counter() - t0, 2)
    sdir = status_dir(Path(work), STAGE)
    sdir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(sdir / "summary.json", {**asdict(summary), "config": asdict(config)})
    return summary
