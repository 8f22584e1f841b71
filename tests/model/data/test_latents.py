"""`fd2talk-prep latents`: cached autoencoder latents in the shards, checked by fingerprint.

Real shards from the demo pipeline (`demo_work`), copied and cut to a few frames a clip (the
tiny autoencoder encodes ~10 frames/s on this CPU), encoded by a real tiny RefAutoencoder saved
to disk by the test.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, start_then_kill
from typer.testing import CliRunner

from fd2talk.core import schema
from fd2talk.core.errors import UserError
from fd2talk.core.skip import PrepError
from fd2talk.model.data import latent_cache
from fd2talk.model.data.latents import LatentsConfig, iter_tar_samples, run_latents

FRAMES = 4  # frames kept per demo clip
TARS = ("test-000000.tar", "train-000000.tar", "val-000000.tar")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: faster for these small convolutions, and steady when the other core
    is busy (the `one_thread` fixture, for module-scoped fixtures)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shorten_mp4(data: bytes, tmp: Path, frames: int) -> bytes:
    src, dst = tmp / "in.mp4", tmp / "out.mp4"
    src.write_bytes(data)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-frames:v",
            str(frames),
            "-t",
            str(frames / schema.FPS),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(dst),
        ],
        check=True,
        timeout=60,
    )
    return dst.read_bytes()


@pytest.fixture(scope="module")
def short_work(demo_work, tmp_path_factory) -> Path:
    """A work dir whose shards are the demo's, every clip cut to FRAMES frames (mp4 re-encoded,
    per-frame arrays sliced, json updated), written like the shard stage writes them."""
    import webdataset as wds

    work = tmp_path_factory.mktemp("latents") / "work"
    out = work / "shards"
    out.mkdir(parents=True)
    tmp = work / "tmp"
    tmp.mkdir()
    for path in sorted((demo_work / "shards").iterdir()):
        if path.suffix != ".tar":
            shutil.copy(path, out / path.name)
            continue
        with open(out / path.name, "wb") as f, tarfile.open(path) as src:
            writer = wds.TarWriter(f, encoder=False, mtime=0, user="fd2talk", group="fd2talk")
            for key, members in iter_tar_samples(src):
                sample = {"__key__": key}
                for info, data in members:
                    ext = info.name[len(key) + 1 :]
                    field = schema.FIELD_BY_KEY.get(ext)
                    if ext == "mp4":
                        data = _shorten_mp4(data, tmp, FRAMES)
                    elif ext == "json":
                        data = json.dumps(
                            {**json.loads(data), "frames": FRAMES}, sort_keys=True
                        ).encode()
                    elif field is not None and field.per_frame:
                        data = _npy(np.load(io.BytesIO(data))[:FRAMES])
                    sample[ext] = data
                writer.write(sample)
            writer.close()
    shutil.rmtree(tmp)
    return work


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _save_autoencoder(path: Path, seed: int) -> Path:
    import torch

    from fd2talk.model.nets.autoencoder import PRESETS, RefAutoencoder

    torch.manual_seed(seed)
    ae = RefAutoencoder.build(PRESETS["tiny"])
    ae.scaling_factor = 1.0  # training measures it; these stand-ins need only some value
    ae.save(path)
    return path


@pytest.fixture(scope="module")
def autoencoders(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny autoencoders (different random weights), saved as training saves them."""
    root = tmp_path_factory.mktemp("ae")
    return _save_autoencoder(root / "a", 0), _save_autoencoder(root / "b", 1)


@pytest.fixture(scope="module")
def encoded(short_work, autoencoders, tmp_path_factory) -> Path:
    """`short_work` with the latents of autoencoder a (one uninterrupted run)."""
    work = tmp_path_factory.mktemp("encoded") / "work"
    shutil.copytree(short_work, work)
    summary = run_latents(work, LatentsConfig(str(autoencoders[0]), "cpu"), progress=False)
    assert (summary.tars, summary.rewritten, summary.already) == (3, 3, 0)
    assert (summary.clips, summary.frames) == (10, 10 * FRAMES)
    print(summary.line())
    return work


def _copy(work: Path, dst: Path) -> Path:
    shutil.copytree(work, dst)
    return dst


def _members(tar: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tar) as tf:
        return [(info, tf.extractfile(info).read()) for info in tf]


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _strip_latents(tar: Path) -> bytes:
    """The tar without latent.npy and without the json's latent entry, as tar bytes."""
    kept = []
    for info, data in _members(tar):
        if info.name.endswith(".latent.npy"):
            continue
        if info.name.endswith(".json"):
            meta = json.loads(data)
            meta.pop(latent_cache.ENTRY_KEY)
            data = json.dumps(meta, sort_keys=True).encode()
            info.size = len(data)
        kept.append((info, data))
    return _tar_bytes(kept)


def _snapshot(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "shards").iterdir()) if p.is_file()}


def test_latents_are_the_encoder_output_and_the_rest_is_unchanged(
    short_work, encoded, autoencoders
):
    import torch

    from fd2talk.model.data.loader import decode_frames, iter_clips
    from fd2talk.model.nets.autoencoder import LATENT_SCALE, RefAutoencoder

    model = RefAutoencoder.load(autoencoders[0]).eval()
    entry = {"autoencoder": model.fingerprint(), "channels": 3, "size": 64, "scale": LATENT_SCALE}
    before, after = short_work / "shards", encoded / "shards"
    for name in TARS:
        # everything but latent.npy and the json's new entry is byte-identical, headers too
        assert _strip_latents(after / name) == (before / name).read_bytes()
        names = [info.name for info, _ in _members(after / name)]
        assert names == sorted(names)  # latent.npy where webdataset's TarWriter puts it
        with tarfile.open(after / name) as tf:
            for key, members in iter_tar_samples(tf):
                sample = {"__key__": key}
                for info, data in members:
                    ext = info.name[len(key) + 1 :]
                    sample[ext] = np.load(io.BytesIO(data)) if ext.endswith(".npy") else data
                sample["json"] = meta = json.loads(sample["json"])
                assert meta[latent_cache.ENTRY_KEY] == entry
                assert schema.validate_sample(sample) == FRAMES
                latent = sample[latent_cache.LATENT_FIELD]
                assert latent.dtype == np.float16 and latent.shape == (FRAMES, 3, 64, 64)
                frames = decode_frames(sample["mp4"])  # (F, 256, 256, 3) uint8
                x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
                with torch.no_grad():
                    direct = model.encode(x).numpy().astype(np.float16)  # (F, 3, 64, 64)
                np.testing.assert_allclose(latent.astype(np.float32), direct, atol=2e-3)
                assert np.abs(latent).max() > 0.01 and latent.std() > 0.01
        stats = json.loads(latent_cache.stats_path(after / name).read_text())
        assert stats.pop(latent_cache.ENTRY_KEY) == entry
        assert stats == json.loads(latent_cache.stats_path(before / name).read_text())
    header, *rows = (after / "manifest.jsonl").read_text().splitlines()
    old_header, *old_rows = (before / "manifest.jsonl").read_text().splitlines()
    assert rows == old_rows
    assert json.loads(header) == {**json.loads(old_header), latent_cache.ENTRY_KEY: entry}
    # the training reader hands the cache over like any other per-frame field
    clip = next(iter_clips(after, "train", ("latent", "valid")))
    assert clip["latent"].shape == (FRAMES, 3, 64, 64) and clip["latent"].dtype == np.float32


def test_check_latents(short_work, encoded, autoencoders, tmp_path):
    from fd2talk.model.nets.autoencoder import RefAutoencoder

    fp_a = RefAutoencoder.load(autoencoders[0]).fingerprint()
    fp_b = RefAutoencoder.load(autoencoders[1]).fingerprint()
    assert fp_a != fp_b
    assert latent_cache.check_latents(short_work / "shards", fp_a, 3) is False
    assert latent_cache.check_latents(encoded / "shards", fp_a, 3) is True
    with pytest.raises(UserError, match="--force"):
        latent_cache.check_latents(encoded / "shards", fp_b, 3)
    with pytest.raises(UserError, match="4 channels"):
        latent_cache.check_latents(encoded / "shards", fp_a, 4)
    # an interrupted run: one train/val tar without latents
    work = _copy(encoded, tmp_path / "w")
    stats = latent_cache.stats_path(work / "shards" / "val-000000.tar")
    stats.write_text(
        json.dumps(
            {k: v for k, v in json.loads(stats.read_text()).items() if k != latent_cache.ENTRY_KEY}
        )
    )
    with pytest.raises(UserError, match="only 1 of 2"):
        latent_cache.check_latents(work / "shards", fp_a, 3)
    meta = next(
        json.loads(data)
        for info, data in _members(encoded / "shards" / "val-000000.tar")
        if info.name.endswith(".json")
    )
    latent_cache.check_sample(meta, fp_a, 3, "val")
    with pytest.raises(UserError, match="--force"):
        latent_cache.check_sample(meta, fp_b, 3, "val")
    with pytest.raises(UserError, match="no cached latents"):
        latent_cache.check_sample({}, fp_a, 3, "val")


def test_rerun_skips_resume_finishes_and_force_replaces(encoded, autoencoders, tmp_path):
    cfg_a = LatentsConfig(str(autoencoders[0]), "cpu")
    cfg_b = LatentsConfig(str(autoencoders[1]), "cpu")
    done = _snapshot(encoded)
    work = _copy(encoded, tmp_path / "w")
    shards = work / "shards"
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.tar")}
    summary = run_latents(work, cfg_a, progress=False)
    assert (summary.already, summary.rewritten, summary.clips) == (3, 0, 0)
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("*.tar")} == mtimes
    assert _snapshot(work) == done

    # killed after a tar was renamed into place but before its stats: finish without encoding
    stats = latent_cache.stats_path(shards / "train-000000.tar")
    stats.write_text(
        json.dumps(
            {k: v for k, v in json.loads(stats.read_text()).items() if k != latent_cache.ENTRY_KEY}
        )
    )
    summary = run_latents(work, cfg_a, progress=False)
    assert (summary.already, summary.rewritten) == (2, 0)
    assert _snapshot(work) == done

    # a different autoencoder is refused, nothing changes; --force replaces every tar
    with pytest.raises(PrepError, match="another autoencoder.*--force"):
        run_latents(work, cfg_b, progress=False)
    assert _snapshot(work) == done
    summary = run_latents(work, cfg_b, progress=False, force=True)
    assert (summary.already, summary.rewritten, summary.clips) == (0, 3, 10)
    replaced = _snapshot(work)
    assert all(replaced[n] != done[n] for n in TARS)
    assert all(_strip_latents(shards / n) == _strip_latents(encoded / "shards" / n) for n in TARS)
    # and back: the same bytes as the uninterrupted run with autoencoder a (deterministic)
    run_latents(work, cfg_a, progress=False, force=True)
    assert _snapshot(work) == done


def test_kill_9_then_resume_equals_an_uninterrupted_run(
    short_work, encoded, autoencoders, tmp_path
):
    work = _copy(short_work, tmp_path / "w")
    tmp_dir = work / "shards" / ".tmp"
    cmd = [
        sys.executable,
        "-c",
        "from fd2talk.cli.prep import main; main()",
        "latents",
        str(work),
        "--autoencoder",
        str(autoencoders[0]),
        "--device",
        "cpu",
        "-q",
    ]
    killed = start_then_kill(cmd, lambda: tmp_dir.is_dir() and any(tmp_dir.iterdir()), delay=0.3)
    assert killed and any(tmp_dir.iterdir())  # it was writing a tar
    before, done = _snapshot(short_work), _snapshot(encoded)
    for name, data in _snapshot(work).items():  # every tar is the old one or a complete one
        assert data in (before.get(name), done[name]), name
    result = CliRunner().invoke(
        _app(), ["latents", str(work), "--autoencoder", str(autoencoders[0]), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "latents: autoencoder" in result.output
    assert _snapshot(work) == _snapshot(encoded)
    assert not tmp_dir.exists()


def _app():
    from fd2talk.cli.prep import app

    return app


def test_cli_errors(short_work, autoencoders, encoded, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        _app(), ["latents", str(tmp_path / "nowork"), "--autoencoder", str(autoencoders[0])]
    )
    assert isinstance(result.exception, PrepError) and "fd2talk-prep shard" in str(result.exception)
    result = runner.invoke(
        _app(), ["latents", str(short_work), "--autoencoder", str(tmp_path / "no_ae")]
    )
    assert isinstance(result.exception, PrepError) and "autoencoder.json" in str(result.exception)
    result = runner.invoke(
        _app(), ["latents", str(encoded), "--autoencoder", str(autoencoders[1]), "-q"]
    )
    assert isinstance(result.exception, PrepError) and "--force" in str(result.exception)
    # through main(): one line and exit status 2, no traceback
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.prep import main; main()",
            "latents",
            str(short_work),
            "--autoencoder",
            str(tmp_path / "no_ae"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "autoencoder.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_frames_training_uses_the_cache_or_refuses_a_foreign_one(
    short_work, autoencoders, tmp_path
):
    """`fd2talk-train frames` reads the cached latents made by its own autoencoder; latents of
    another autoencoder, frames of another size than the cache, or colour jitter with the
    cache are clear errors."""
    import torch

    from fd2talk.model.training.frames import FramesTrainConfig, train_frames

    work = tmp_path / "work"
    shutil.copytree(short_work, work)
    a, b = autoencoders
    run_latents(work, LatentsConfig(autoencoder=str(a), device="cpu"), progress=False)
    base = dict(
        shards=str(work / "shards"),
        steps=2,
        batch_size=4,
        items_per_clip=2,
        val_every=1,
        device="cpu",
    )
    train_frames(
        FramesTrainConfig(out=str(tmp_path / "cached"), autoencoder=str(a), **base), progress=False
    )
    state = torch.load(tmp_path / "cached" / "checkpoint.pt", weights_only=False)
    assert state["extras"]["latent_cache"] is True and state["step"] == 2
    train_frames(
        FramesTrainConfig(
            out=str(tmp_path / "plain"), autoencoder=str(a), latent_cache=False, **base
        ),
        progress=False,
    )
    assert (
        torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)["extras"][
            "latent_cache"
        ]
        is False
    )
    with pytest.raises(UserError, match="another autoencoder|--force"):
        train_frames(
            FramesTrainConfig(out=str(tmp_path / "b"), autoencoder=str(b), **base), progress=False
        )
    with pytest.raises(UserError, match="--image-size is 64"):
        train_frames(
            FramesTrainConfig(
                out=str(tmp_path / "small"), autoencoder=str(a), image_size=64, **base
            ),
            progress=False,
        )
    # colour jitter recolours frames before encoding: not with cached latents
    with pytest.raises(UserError, match="--no-latent-cache"):
        train_frames(
            FramesTrainConfig(out=str(tmp_path / "jitter"), autoencoder=str(a), jitter=0.2, **base),
            progress=False,
        )
    train_frames(
        FramesTrainConfig(
            out=str(tmp_path / "jitter"), autoencoder=str(a), jitter=0.2, latent_cache=False, **base
        ),
        progress=False,
    )
