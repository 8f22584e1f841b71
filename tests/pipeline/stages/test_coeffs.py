"""Stage `coeffs`: shapes, the valid mask, skips, determinism, mouth motion, both backends."""

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest
import torch
from helpers.coeffs import SIZE, astronaut_crop, load, make_crop, moving_face, run, write_lm3d_mat
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core import atomic, media, schema
from fd2talk.core.skip import PrepError, Skip, SkipReason
from fd2talk.pipeline.backends import deep3d, landmarker
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.runner.status import read_status
from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage, check_finite

GREY = 128


def open_mouth(image: np.ndarray, lm: np.ndarray, amount: float) -> np.ndarray:
    """Drop the jaw below the lips by `amount` pixels and paint the opened mouth dark."""
    h, w = image.shape[:2]
    cx, half = (lm[61, 0] + lm[291, 0]) / 2, (lm[291, 0] - lm[61, 0]) / 2
    ym, chin = (lm[13, 1] + lm[14, 1]) / 2, lm[152, 1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wx = np.clip(1 - (np.abs(xx - cx) / (2.2 * half)) ** 2, 0, 1)  # fades out across the jaw
    wy = np.where(yy < ym, 0, np.where(yy < chin, 1, np.clip(1 - (yy - chin) / 40, 0, 1)))
    d = amount * wx * wy
    src_y = (yy - d).astype(np.float32)  # cv2.remap needs float32 maps
    out = cv2.remap(image, xx, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).copy()
    ex = np.clip(1 - ((xx - cx) / (0.92 * half)) ** 2, 0, 1)
    cavity = (yy >= ym) & (src_y < ym) & (ex > 0) & (yy - ym < d * np.sqrt(ex))
    out[cavity] = (60, 20, 25)
    return out


@pytest.fixture(scope="module")
def face_work(tmp_path_factory, face_model):
    """A work dir with clips: a face, a face with 3 blank frames, too many blanks, no face."""
    work = tmp_path_factory.mktemp("coeffs")
    face = moving_face(30)
    make_crop(work, "face_f000_t0", face)
    blanked = face.copy()
    blanked[[5, 6, 20]] = GREY
    make_crop(work, "blank3_f000_t0", blanked)
    many = face.copy()
    many[10:20] = GREY
    make_crop(work, "blank10_f000_t0", many)
    make_crop(work, "none_f000_t0", np.full_like(face[:25], GREY))
    make_crop(work, "short_f000_t0", face[:25], json_frames=26)
    run(work)
    return work


def test_shapes_and_dtypes(face_work):
    z = load(face_work, "face_f000_t0")
    f = 30
    assert z["exp"].shape == (f, 52) and z["exp"].dtype == np.float32
    assert z["pose"].shape == (f, 6) and z["pose"].dtype == np.float32
    assert z["id"].shape == (478 * 3,) and z["id"].dtype == np.float32
    assert z["lm"].shape == (f, 478, 2) and z["lm"].dtype == np.float32
    assert z["lm3d"].shape == (f, 478, 3) and z["lm3d"].dtype == np.float16
    assert z["valid"].shape == (f,) and z["valid"].dtype == bool and z["valid"].all()
    assert 0 < z["lm"].min() and z["lm"].max() < SIZE  # crop pixels
    meta = json.loads(str(z["meta"]))
    assert meta["backend"] == "mediapipe" and meta["exp_dim"] == 52 and meta["frames"] == f
    assert meta["exp_names"][landmarker.JAW_OPEN] == "jawOpen"
    # the face drifts by a few pixels: the landmarks follow it, the canonical shape does not
    nose = z["lm"][:, 4]
    assert np.ptp(nose[:, 0]) > 3
    canon = z["lm3d"].astype(np.float32)
    assert np.abs(canon - canon.mean(0)).max() < 0.3  # cm
    np.testing.assert_allclose(z["id"], canon.mean(0).reshape(-1), atol=0.01)
    # the shard schema accepts the arrays
    for name in ("exp", "pose", "id", "valid", "lm", "lm3d"):
        field = schema.FIELD_BY_KEY[f"{name}.npy"]
        assert z[name].dtype == np.dtype(field.dtype) and z[name].ndim == field.ndim


def test_frames_without_a_face_are_invalid_and_zero(face_work):
    z = load(face_work, "blank3_f000_t0")
    blank = [5, 6, 20]
    assert np.flatnonzero(~z["valid"]).tolist() == blank
    for name in ("exp", "pose", "lm", "lm3d"):
        assert not z[name][blank].any(), name  # zero, never a neighbour's values
        assert all(z[name][i].any() for i in range(30) if i not in blank), name
    ref = load(face_work, "face_f000_t0")
    ok = z["valid"]
    assert np.abs(z["lm"][ok] - ref["lm"][ok]).max() < 3.0  # the other frames are unaffected
    assert json.loads(str(z["meta"]))["valid_frames"] == 27


def test_too_many_invalid_frames_and_no_face_are_skipped(face_work):
    rec = read_status(face_work, "coeffs", "blank10_f000_t0")
    assert rec["status"] == "skipped" and rec["reason"] == "too_many_invalid_frames"
    assert "10 of 30 frames have no face" in rec["detail"]
    rec = read_status(face_work, "coeffs", "none_f000_t0")
    assert rec["status"] == "skipped" and rec["reason"] == "no_face"
    rec = read_status(face_work, "coeffs", "short_f000_t0")
    assert rec["status"] == "skipped" and rec["reason"] == "inconsistent_inputs"
    assert "25" in rec["detail"] and "26" in rec["detail"]
    for key in ("blank10_f000_t0", "none_f000_t0", "short_f000_t0"):
        assert not (face_work / "coeffs" / f"{key}.npz").exists()
    failures = (face_work / "status" / "coeffs" / "failures.jsonl").read_text()
    assert failures.count("\n") == 3
    # a looser limit lets the 10-of-30 clip through, with its 10 rows invalid
    loose = face_work.parent / "loose"
    shutil.copytree(face_work / "crops", loose / "crops")
    run(loose, max_invalid=0.5)
    assert (~load(loose, "blank10_f000_t0")["valid"]).sum() == 10


def test_rerun_gives_identical_bytes(face_work, tmp_path):
    again = tmp_path / "again"
    (again / "crops").mkdir(parents=True)
    for name in ("blank3_f000_t0.mp4", "blank3_f000_t0.json"):
        shutil.copy(face_work / "crops" / name, again / "crops" / name)
    run(again)
    first = (face_work / "coeffs" / "blank3_f000_t0.npz").read_bytes()
    assert (again / "coeffs" / "blank3_f000_t0.npz").read_bytes() == first


def test_jaw_follows_a_painted_mouth(tmp_path, face_model):
    """A generated video whose mouth opens and closes: jawOpen and the lip gap follow it."""
    base = astronaut_crop()
    with landmarker.Landmarker(face_model) as lmk:
        lm = lmk.detect(base, 0).landmarks
    amount = 8 + 8 * np.sin(np.arange(40) * 2 * np.pi / 16)  # 0..16 px, period 0.64 s
    frames = np.stack([open_mouth(base, lm, a) for a in amount])
    make_crop(tmp_path, "mouth_f000_t0", frames)
    run(tmp_path)
    z = load(tmp_path, "mouth_f000_t0")
    jaw = z["exp"][:, landmarker.JAW_OPEN]
    gap = landmarker.lip_gap(z["lm"])
    assert np.corrcoef(jaw, amount)[0, 1] > 0.9
    assert np.corrcoef(gap, amount)[0, 1] > 0.9
    assert jaw[amount > 14].mean() > jaw[amount < 2].mean() + 0.1


def speech_envelope(mp4, n: int, smooth: int = 9) -> np.ndarray:
    """Per-frame audio RMS (640 samples a frame), smoothed over `smooth` frames."""
    audio = media.read_audio(mp4, timeout=60)[: n * schema.SAMPLES_PER_FRAME]
    audio = np.pad(audio, (0, n * schema.SAMPLES_PER_FRAME - len(audio)))
    rms = np.sqrt((audio.reshape(n, -1) ** 2).mean(1))
    return np.convolve(rms, np.ones(smooth) / smooth, "same")


def test_jaw_follows_speech_on_a_real_clip(shared_media, tmp_path):
    n = make_crop(tmp_path, "aoc_f000_t0", src=shared_media / "hdtf_aoc_512.mp4")
    assert n == 200
    run(tmp_path)
    z = load(tmp_path, "aoc_f000_t0")
    assert z["valid"].all() and len(z["valid"]) == n
    jaw = z["exp"][:, landmarker.JAW_OPEN]
    assert np.ptp(jaw) > 0.2  # the mouth moves
    gap = landmarker.lip_gap(z["lm"])
    assert np.corrcoef(jaw, gap)[0, 1] > 0.6  # DESIGN.md measured r = 0.75
    # with speech: the mouth leads the sound by 0-3 frames (coarticulation)
    env = speech_envelope(tmp_path / "crops" / "aoc_f000_t0.mp4", n)
    smooth_jaw = np.convolve(jaw, np.ones(9) / 9, "same")
    best = max(np.corrcoef(smooth_jaw[: n - lag], env[lag:])[0, 1] for lag in range(4))
    assert best > 0.3
    quiet = env < np.quantile(env, 0.2)
    loud = env > np.quantile(env, 0.5)
    assert jaw[loud].mean() > 1.5 * jaw[quiet].mean()


def test_deep3d_backend(tmp_path):
    torch.manual_seed(0)
    net = deep3d.build_rnet()
    ckpt = tmp_path / deep3d.CHECKPOINT_NAME
    torch.save({"net_recon": net.state_dict()}, ckpt)
    bfm = write_lm3d_mat(tmp_path / "bfm")
    frames = moving_face(6)
    frames[2] = GREY
    make_crop(tmp_path, "d3d_f000_t0", frames)
    # max_roll 180: the R-Net's weights are random, so are its angles
    cfg = dict(
        backend="deep3d",
        deep3d_checkpoint=str(ckpt),
        bfm_dir=str(bfm),
        batch_size=4,
        device="cpu",
        max_invalid=0.2,
        max_roll=180.0,
    )
    run(tmp_path, **cfg)
    z = load(tmp_path, "d3d_f000_t0")
    f = 6
    shapes = {k: v.shape for k, v in z.items()}
    assert shapes == {
        "exp": (f, 64),
        "pose": (f, 6),
        "id": (80,),
        "tex": (80,),
        "gamma": (f, 27),
        "lm": (f, 478, 2),
        "lm3d": (f, 478, 3),
        "valid": (f,),
        "meta": (),
    }
    assert z["valid"].tolist() == [True, True, False, True, True, True]
    for name in ("exp", "pose", "gamma", "lm", "lm3d"):
        assert not z[name][2].any(), name  # the blank frame's rows are zero
        assert all(z[name][i].any() for i in (0, 1, 3, 4, 5)), name
    assert json.loads(str(z["meta"]))["backend"] == "deep3d"
    # each row is the R-Net on that frame's own aligned crop (batching keeps the order)
    decoded = media.read_frames(tmp_path / "crops" / "d3d_f000_t0.mp4", SIZE, SIZE, 60)
    lm3d = deep3d.load_lm3d(bfm)
    rows = [0, 1, 3, 4, 5]
    crops = np.stack(
        [deep3d.align_img(decoded[i], landmarker.five_points(z["lm"][i]), lm3d)[0] for i in rows]
    )
    want = deep3d.split_coeffs(deep3d.bare_inference(deep3d.load_rnet(ckpt, "cpu"), crops))
    tol = dict(rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(z["exp"][rows], want["exp"], **tol)
    np.testing.assert_allclose(z["gamma"][rows], want["gamma"], **tol)
    np.testing.assert_allclose(z["pose"][rows], np.c_[want["angles"], want["trans"]], **tol)
    np.testing.assert_allclose(z["id"], want["id"].mean(0), **tol)
    np.testing.assert_allclose(z["tex"], want["tex"].mean(0), **tol)


def test_cli_and_errors(face_work, tmp_path, monkeypatch):
    work = tmp_path / "cli"
    (work / "crops").mkdir(parents=True)
    for name in ("face_f000_t0.mp4", "face_f000_t0.json"):
        shutil.copy(face_work / "crops" / name, work / "crops" / name)
    result = CliRunner().invoke(app, ["coeffs", str(work), "-q"])
    assert result.exit_code == 0, result.output
    assert (work / "coeffs" / "face_f000_t0.npz").read_bytes() == (
        face_work / "coeffs" / "face_f000_t0.npz"
    ).read_bytes()
    monkeypatch.delenv(deep3d.CHECKPOINT_ENV, raising=False)
    result = CliRunner().invoke(app, ["coeffs", str(work), "--backend", "deep3d"])
    assert isinstance(result.exception, PrepError) and "epoch_20.pth" in str(result.exception)
    with pytest.raises(PrepError, match="unknown coeffs backend"):
        CoeffsStage(CoeffsConfig(backend="nope"))
    with pytest.raises(PrepError, match="face_landmarker.task"):
        CoeffsStage(CoeffsConfig(face_model=str(tmp_path / "missing.task")))


def test_bare_inference_finds_the_faces(face_model, tmp_path):
    frames = moving_face(3)
    assert CoeffsStage().bare_inference(frames) == 3  # a face in every frame
    assert landmarker.bare_inference(frames, face_model) == 3
    frames[1] = GREY
    assert CoeffsStage().bare_inference(frames) == 2
    torch.manual_seed(0)
    ckpt = tmp_path / deep3d.CHECKPOINT_NAME
    torch.save({"net_recon": deep3d.build_rnet().state_dict()}, ckpt)
    stage = CoeffsStage(
        CoeffsConfig(
            backend="deep3d",
            deep3d_checkpoint=str(ckpt),
            bfm_dir=str(write_lm3d_mat(tmp_path / "bfm")),
            batch_size=2,
            device="cpu",
        )
    )
    out = stage.bare_inference(frames)
    assert out.shape == (3, deep3d.COEFF_DIM) and np.isfinite(out).all()


def test_crops_of_another_size_give_landmarks_in_their_pixels(tmp_path, face_model):
    """A crop made with --size 320 is decoded at 320 (its json's "size"), not at 256."""
    side = 320
    face = np.stack(
        [cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in moving_face(8)]
    )
    make_crop(tmp_path, "big_f000_t0", face)
    meta = json.loads((tmp_path / "crops" / "big_f000_t0.json").read_text())
    atomic.write_json(tmp_path / "crops" / "big_f000_t0.json", {**meta, "size": side})
    run(tmp_path)
    z = load(tmp_path, "big_f000_t0")
    decoded = media.read_frames(tmp_path / "crops" / "big_f000_t0.mp4", side, side, 60)
    with landmarker.Landmarker(face_model) as lmk:
        want = lmk.track(decoded)
    assert z["valid"].all()
    np.testing.assert_allclose(z["lm"], want.landmarks[..., :2], atol=1e-3)
    small = media.read_frames(tmp_path / "crops" / "big_f000_t0.mp4", SIZE, SIZE, 60)
    with landmarker.Landmarker(face_model) as lmk:
        at_256 = lmk.track(small).landmarks[..., :2]
    spread = np.ptp(z["lm"], axis=1).mean() / np.ptp(at_256, axis=1).mean()
    assert abs(spread - side / SIZE) < 0.03  # the 320-pixel scale, not the 256 one


def test_non_finite_arrays_are_skipped():
    ok = {
        "exp": np.zeros((2, 52), np.float32),
        "lm3d": np.zeros((2, 478, 3), np.float16),
        "valid": np.ones(2, bool),
        "meta": np.array("{}"),
    }
    check_finite(ok)
    with np.errstate(over="ignore"):  # 7e4 cm is beyond float16's 65504: inf
        over = dict(ok, lm3d=np.full((2, 478, 3), 7e4, np.float32).astype(np.float16))
    for bad, name in ((over, "lm3d"), (dict(ok, exp=np.full((2, 52), np.nan, np.float32)), "exp")):
        with pytest.raises(Skip) as err:
            check_finite(bad)
        assert err.value.reason == SkipReason.NON_FINITE and name in err.value.detail


def test_a_face_on_its_side_is_skipped_with_its_reason(shared_media, tmp_path):
    """A real talking clip turned by 50 degrees (a sideways camera, no rotation metadata) is a
    face_rotated skip; the same clip upright is kept."""
    from fd2talk.pipeline.stages.crop import CropConfig, CropStage

    rows = ["key,path"]
    for angle in (0, 50):
        out = tmp_path / f"turned{angle}.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(shared_media / "talk_10_512.mp4"),
                "-t",
                "2",
                "-vf",
                f"rotate={angle}*PI/180:fillcolor=black",
                "-c:v",
                "libx264",
                "-c:a",
                "aac",
                str(out),
            ],
            check=True,
            timeout=120,
        )
        rows.append(f"turned{angle},{out}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage

    work = tmp_path / "work"
    run_stage(ClipStage(ClipConfig(str(tmp_path / "m.csv"))), work, progress=False)
    run_stage(CropStage(CropConfig()), work, progress=False)
    s = run_stage(CoeffsStage(CoeffsConfig()), work, progress=False)
    assert s.done == 1 and dict(s.skipped) == {"face_rotated": 1}
    rec = [r for r in s.failures if r["reason"] == "face_rotated"][0]
    assert rec["key"].startswith("turned50") and "tilted by" in rec["detail"]
