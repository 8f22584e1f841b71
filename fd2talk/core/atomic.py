"""Atomic outputs: write under a temporary name in `<dir>/.tmp/`, then rename into place.

Nothing half-written is ever visible under a final name: a run killed at any
point leaves only files in `.tmp/`, which the next run ignores and cleans.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TMP_DIR = ".tmp"


def tmp_path_for(final: Path) -> Path:
    """A fresh temporary path beside `final` that keeps its extension (ffmpeg reads it)."""
    tmp_dir = final.parent / TMP_DIR
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return tmp_dir / f"{uuid.uuid4().hex[:12]}-{final.name}"


def publish(tmp: Path, final: Path) -> None:
    """Flush `tmp` to disk and rename it to `final` (atomic on one filesystem)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it becomes `final`, on error it is removed."""
    final = Path(final)
    tmp = tmp_path_for(final)
    try:
        yield tmp
        publish(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def follow_umask(path: Path) -> None:
    """Give a file the mode the umask asks for (0644 under the usual 022), as `open` does.
    For writers that set their own: safetensors' `save_file` makes every file 0600, which no
    other user (a container's, a shared disk's) can read."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def json_default(obj: object) -> object:
    """`json.dumps(default=...)` for what fd2talk writes besides plain JSON: numpy scalars and
    arrays become numbers and lists, paths strings; anything else is an error."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def json_text(obj: object, indent: int = 1) -> str:
    """`obj` as sorted, indented JSON with a final newline (numpy values allowed)."""
    return json.dumps(obj, indent=indent, sort_keys=True, default=json_default) + "\n"


def write_json(final: Path, obj: object) -> None:
    write_bytes(final, json_text(obj).encode())


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy file (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def write_npy(final: Path, array: np.ndarray) -> None:
    write_bytes(final, npy_bytes(array))


def write_npz(final: Path, **arrays: np.ndarray) -> None:
    """Like `np.savez`, but byte-identical across runs (np.savez stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            zf.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                npy_bytes(arrays[name]),
            )
    write_bytes(final, buf.getvalue())


def clean_tmp(out_dir: Path) -> None:
    """Remove leftovers of killed runs (only called when no other process may be writing)."""
    shutil.rmtree(Path(out_dir) / TMP_DIR, ignore_errors=True)
