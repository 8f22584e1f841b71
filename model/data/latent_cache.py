"""The latent cache's contract: which autoencoder made the `latent.npy` in the shards.

`fd2talk-prep latents WORK --autoencoder DIR` (`fd2talk.model.data.latents`) stores the fine-tuned
autoencoder's latents of every frame in the shards, so frame-UNet training (paper section 3.4.2)
need not run the encoder every step. Latents are only valid for the autoencoder that made them
(the UNet's samples are decoded by that same decoder), so the cache records, in three places,

    sample json            "latent": ENTRY   (per clip: what its latent.npy holds)
    <tar>.stats.json       "latent": ENTRY   (per tar: written after the tar itself)
    manifest.jsonl header  "latent": ENTRY   (whole cache: written after every tar)

with ENTRY = {"autoencoder": RefAutoencoder.fingerprint(), "channels": d, "size": 64,
"scale": LATENT_SCALE}. A trainer calls `check_latents` once (it reads the small stats files,
never the tars): True -> read `latent.npy`; False -> encode frames itself; a cache of another
autoencoder -> UserError. No torch here: this module is imported by command lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from fd2talk.core.errors import UserError

LATENT_FIELD = "latent.npy"  # the sample field (schema: float16 (F, d, size, size))
ENTRY_KEY = "latent"  # key of the entry in sample json, tar stats and manifest header
MANIFEST = "manifest.jsonl"
STATS_SUFFIX = ".stats.json"  # `train-000000.tar` -> `train-000000.stats.json`
TRAIN_SPLITS = ("train", "val")  # the splits a trainer reads
RERUN_HINT = (
    "re-run `fd2talk-prep latents WORK --autoencoder DIR --force` with the autoencoder "
    "this run uses, or train without the cache"
)


def cache_entry(fingerprint: str, channels: int, size: int, scale: float) -> dict:
    """The record a cached latent carries (sample json, tar stats, manifest header)."""
    return {
        "autoencoder": fingerprint,
        "channels": int(channels),
        "size": int(size),
        "scale": float(scale),
    }


def stats_path(tar: str | Path) -> Path:
    """The per-tar stats json the shard stage writes beside `tar`."""
    tar = Path(tar)
    return tar.with_name(tar.name.removesuffix(".tar") + STATS_SUFFIX)


def read_header(shards_dir: str | Path) -> dict:
    """The first line of `shards_dir/manifest.jsonl` (shard list, counts, latent entry)."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{path} not found: point at the `shards` folder that "
            "`fd2talk-prep shard` (or `fd2talk-prep run`) wrote"
        )
    with path.open() as f:
        return json.loads(f.readline())


def tar_entry(tar: str | Path) -> dict | None:
    """The latent entry of one tar's stats json; None when it has none (or no stats file)."""
    path = stats_path(tar)
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get(ENTRY_KEY)


def _describe(entry: dict) -> str:
    return f"autoencoder {str(entry.get('autoencoder'))[:12]}, {entry.get('channels')} channels"


def check_entry(entry: dict, fingerprint: str, channels: int, where: str) -> None:
    """UserError unless `entry` says latents of this autoencoder with `channels` channels."""
    if entry.get("autoencoder") != fingerprint or entry.get("channels") != channels:
        raise UserError(
            f"{where} holds latents of {_describe(entry)}, but this run uses autoencoder "
            f"{fingerprint[:12]} with {channels} channels: {RERUN_HINT}"
        )


def check_latents(shards_dir: str | Path, fingerprint: str, channels: int) -> bool:
    """Does the shard folder carry cached latents of this autoencoder?

    True: every train/val tar's stats name this `fingerprint` and `channels`. False: none
    carries latents (train by encoding the frames). UserError: some carry latents of another
    autoencoder or channel count, or only some tars carry latents (an interrupted
    `fd2talk-prep latents`); the message says how to fix it.
    """
    root = Path(shards_dir)
    tars = [
        root / name
        for name in read_header(root).get("shards", [])
        if name.split("-")[0] in TRAIN_SPLITS
    ]
    entries = {tar.name: tar_entry(tar) for tar in tars}
    for name, entry in entries.items():
        if entry is not None:
            check_entry(entry, fingerprint, channels, f"{root / name}")
    cached = [name for name, entry in entries.items() if entry is not None]
    if not cached:
        return False
    if len(cached) < len(entries):
        missing = sorted(set(entries) - set(cached))
        raise UserError(
            f"only {len(cached)} of {len(entries)} train/val tars in {root} carry cached "
            f"latents ({missing[0]} has none; an interrupted `fd2talk-prep latents`?): re-run "
            "`fd2talk-prep latents WORK --autoencoder DIR` to finish it, or train without the "
            "cache"
        )
    return True


def check_sample(meta: dict, fingerprint: str, channels: int, key: str = "?") -> None:
    """UserError unless a sample's json says its `latent.npy` comes from this autoencoder
    (for readers of single samples; `check_latents` covers whole folders cheaply)."""
    entry = meta.get(ENTRY_KEY)
    if entry is None:
        raise UserError(
            f"sample {key} has no cached latents: run `fd2talk-prep latents WORK "
            "--autoencoder DIR`, or train without the cache"
        )
    check_entry(entry, fingerprint, channels, f"sample {key}")
