"""Cross-fitting folds: fold K of N of a split's clips with speech, which a stage-1 model
trained with `fd2talk-train motion --fold K/N` never sees."""

from __future__ import annotations

from pathlib import Path

from fd2talk.core.errors import UserError
from fd2talk.model.data.loader import iter_clips


def parse_fold(text: str) -> tuple[int, int]:
    """ "K/N" -> (K, N): fold K (0-based) of N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(
            f"--fold takes K/N (fold K of N, counted from 0), e.g. 0/2; got {text!r}"
        ) from None
    if n < 2 or not 0 <= k < n:
        raise UserError(f"--fold {text}: need N >= 2 and 0 <= K < N")
    return k, n


def fold_keys(shards: str | Path, k: int, n: int, split: str = "train") -> list[str]:
    """The clips with speech of fold `k` of `n` of `split`: every n-th key from the k-th, in
    key order (a stage-1 model trained with `--fold K/N` leaves these out; cross-fitting)."""
    keys = sorted(c["key"] for c in iter_clips(shards, split, ("valid", "audio")))
    if len(keys) < n:
        raise UserError(
            f"--fold .../{n}: the {split} split has only {len(keys)} clips, fewer than folds"
        )
    return keys[k::n]
