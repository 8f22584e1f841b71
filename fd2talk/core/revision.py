"""Where a result came from: the source tree's git revision, and fingerprints that say when two
sets of weights compute the same thing (written into every run, checkpoint, shard stats file
and latent cache record, STYLE.md rule 5)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path


def git_revision() -> str:
    """The source tree's git revision (with `-dirty`); $FD2TALK_GIT_REVISION outside a
    checkout (the Docker image sets it at build time); else "unknown"."""
    here = Path(__file__).resolve().parent
    fallback = os.environ.get("FD2TALK_GIT_REVISION") or "unknown"
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return fallback
    return rev.stdout.strip() if rev.returncode == 0 else fallback


def tensor_fingerprint(config: Mapping, tensors: Mapping) -> str:
    """sha256 hex over a JSON config and every tensor (name, dtype, shape, bytes), in name
    order: equal exactly when two networks with these settings compute the same thing."""
    import torch

    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(tensors.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
