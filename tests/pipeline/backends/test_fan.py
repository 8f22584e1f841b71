"""face-alignment's 2D-FAN as the coeffs stage's landmark backend (`--landmarks fan`), run by the
real library on stand-in weight files of the published layouts (tests/conftest.py)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from helpers import fan_standin, s3fd_standin
from helpers.coeffs import load, make_crop, moving_face, run, write_lm3d_mat
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core import media
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends import deep3d, fan
from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage

SIDE = 128  # small crops: S3FD's stride-128 level is 2 x 2 anchors there
# the stand-in detector's one face: the last stride-128 anchor (centre 192, 192; NMS keeps it,
# it comes last among equal scores) moved to the crop's centre and shrunk to 420 px, wide
# enough that it suppresses the other three
LOC = (-2.5, -2.5, float(np.log(420 / 512) / 0.2), float(np.log(420 / 512) / 0.2))


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fa")
    return (
        fan_standin(folder / fan.FAN_FILE),
        s3fd_standin(folder / "s3fd-619a316812.pth", level=5, loc=LOC),
    )


def face(n: int = 1) -> np.ndarray:
    return np.stack(
        [cv2.resize(f, (SIDE, SIDE), interpolation=cv2.INTER_AREA) for f in moving_face(n)]
    )


@pytest.mark.slow  # over 10 s: out of the fast subset
def test_fan_loads_local_files_only_and_restores_torch_hub(standins, monkeypatch, tmp_path):
    import face_alignment.utils

    def no_download(*args, **kwargs):
        raise AssertionError("face-alignment tried to download")

    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", no_download)
    before = torch.hub._hub_dir  # None unless someone called set_dir: $TORCH_HOME decides
    fan_path, s3fd_path = standins
    monkeypatch.setenv(fan.FAN_ENV, str(fan_path))  # FAN from the environment
    with fan.FanLandmarker(s3fd_weights=s3fd_path, device="cpu") as lmk:
        assert torch.hub._hub_dir == before
        net = lmk._fa.face_alignment_net
        want = torch.load(fan_path, weights_only=True)
        assert all(torch.equal(v, want[k]) for k, v in net.state_dict().items())
        assert not isinstance(net, torch._dynamo.eval_frame.OptimizedModule)  # compile=False
        points = lmk.landmarks(face()[0])
        assert points.shape == (68, 2) and points.dtype == np.float32
        assert np.isfinite(points).all() and np.ptp(points, 0).min() > 0
        assert lmk.landmarks(face()[0]).tolist() == points.tolist()  # deterministic
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))  # still followed afterwards
    assert torch.hub.get_dir() == str(tmp_path / "th" / "hub")
    assert fan.five_points(points).shape == (5, 2)
    np.testing.assert_allclose(fan.five_points(points)[0], points[[36, 39]].mean(0))
    np.testing.assert_allclose(fan.five_points(points)[3], points[48])
    # a detector that finds nothing: no landmarks
    with fan.FanLandmarker(
        fan_path, s3fd_standin(tmp_path / "none.pth", logit=-10.0), device="cpu"
    ) as lmk:
        assert lmk.landmarks(face()[0]) is None


def test_missing_and_wrong_files_are_errors_that_say_what_to_do(standins, tmp_path, monkeypatch):
    fan_path, s3fd_path = standins
    monkeypatch.delenv(fan.FAN_ENV, raising=False)
    with pytest.raises(PrepError, match="--fan-weights PATH or set FD2TALK_FAN_WEIGHTS") as e:
        fan.FanLandmarker(s3fd_weights=s3fd_path, device="cpu")
    assert fan.FAN_URL in str(e.value) and "--landmarks mediapipe" in str(e.value)
    with pytest.raises(PrepError, match="2DFAN4-11f355bf06.pth.tar not found at .*nope"):
        fan.FanLandmarker(tmp_path / "nope", s3fd_path, device="cpu")
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(PrepError, match=f"junk is not face-alignment's {fan.FAN_FILE}"):
        fan.FanLandmarker(tmp_path / "junk", s3fd_path, device="cpu")
    with pytest.raises(PrepError, match="junk is not face-alignment's s3fd-619a316812.pth"):
        fan.FanLandmarker(fan_path, tmp_path / "junk", device="cpu")
    with pytest.raises(PrepError, match="with --backend deep3d"):
        CoeffsStage(
            CoeffsConfig(landmarks="fan", fan_weights=str(fan_path), s3fd_weights=str(s3fd_path))
        )
    result = CliRunner().invoke(
        app,
        [
            "coeffs",
            str(tmp_path / "w"),
            "--backend",
            "deep3d",
            "--landmarks",
            "fan",
            "--deep3d-checkpoint",
            str(fan_path),
            "--bfm-dir",
            str(tmp_path),
        ],
    )
    assert isinstance(result.exception, PrepError)  # a missing file, before any work


@pytest.mark.slow
def test_deep3d_aligns_with_fan_landmarks(standins, tmp_path):
    """--landmarks fan: lm holds FAN's 68 points, and each R-Net row is the R-Net on that
    frame's crop aligned with the 5 points taken from them."""
    fan_path, s3fd_path = standins
    torch.manual_seed(0)
    ckpt = tmp_path / deep3d.CHECKPOINT_NAME
    torch.save({"net_recon": deep3d.build_rnet().state_dict()}, ckpt)
    bfm = write_lm3d_mat(tmp_path / "bfm")
    frames = face(5)
    frames[2] = 128  # no face: MediaPipe finds none, so the row is invalid
    make_crop(tmp_path, "fan_f000_t0", frames)
    meta = json.loads((tmp_path / "crops" / "fan_f000_t0.json").read_text())
    (tmp_path / "crops" / "fan_f000_t0.json").write_text(json.dumps({**meta, "size": SIDE}))
    run(
        tmp_path,
        backend="deep3d",
        deep3d_checkpoint=str(ckpt),
        bfm_dir=str(bfm),
        landmarks="fan",
        fan_weights=str(fan_path),
        s3fd_weights=str(s3fd_path),
        batch_size=2,
        device="cpu",
        max_invalid=0.5,
        max_roll=180.0,
    )
    z = load(tmp_path, "fan_f000_t0")
    assert z["lm"].shape == (5, 68, 2) and z["lm3d"].shape == (5, 478, 3)
    meta = json.loads(str(z["meta"]))
    assert meta["landmarks"] == "fan" and meta["lm_points"] == 68
    decoded = media.read_frames(tmp_path / "crops" / "fan_f000_t0.mp4", SIDE, SIDE, 60)
    with fan.FanLandmarker(fan_path, s3fd_path, device="cpu") as lmk:
        want = [lmk.landmarks(f) for f in decoded]
    rows = np.flatnonzero(z["valid"]).tolist()
    assert 2 not in rows and rows, z["valid"]
    assert not z["lm"][2].any() and not z["exp"][2].any()
    for i in rows:
        np.testing.assert_allclose(z["lm"][i], want[i], atol=1e-4)
    lm3d = deep3d.load_lm3d(bfm)
    crops = np.stack(
        [deep3d.align_img(decoded[i], fan.five_points(want[i]), lm3d)[0] for i in rows]
    )
    expect = deep3d.split_coeffs(deep3d.bare_inference(deep3d.load_rnet(ckpt, "cpu"), crops))
    np.testing.assert_allclose(z["exp"][rows], expect["exp"], rtol=1e-3, atol=1e-3)
