"""model/nets/face_model.py: eq. 1 on the mouth, the BFM loader (on a small .mat written here), the
streaming mediapipe fit (known linear ground truth) and its R^2 on a real clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.io import savemat

from fd2talk.core.errors import UserError
from fd2talk.model.nets import face_model as fm
from fd2talk.model.nets.face_model import MOUTH, FaceModel

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- eq. 1 -------------------------------------------------------------------------------------


def _random_model(
    m=7, d_id=5, d_exp=4, seed=0
) -> tuple[FaceModel, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean, b_id, b_exp = (
        rng.normal(size=3 * m),
        rng.normal(size=(3 * m, d_id)),
        rng.normal(size=(3 * m, d_exp)),
    )
    return FaceModel(mean, b_id, b_exp, "deep3d"), mean, b_id, b_exp


def test_forward_is_eq1_with_per_sequence_identity():
    model, mean, b_id, b_exp = _random_model()
    assert (model.n_points, model.id_dim, model.exp_dim, model.backend) == (7, 5, 4, "deep3d")
    rng = np.random.default_rng(1)
    beta, alpha = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5))  # (N, F, D_exp), (N, D_id)
    out = model(torch.tensor(beta, dtype=torch.float32), torch.tensor(alpha, dtype=torch.float32))
    assert out.shape == (2, 3, 7, 3)
    want = mean + beta @ b_exp.T + (alpha @ b_id.T)[:, None]  # (N, F, 3M)
    np.testing.assert_allclose(out.numpy(), want.reshape(2, 3, 7, 3), rtol=1e-5, atol=1e-5)
    # same identity given per frame, and alpha=None is the mean face plus expression
    per_frame = model(
        torch.tensor(beta, dtype=torch.float32),
        torch.tensor(alpha, dtype=torch.float32)[:, None].expand(2, 3, 5),
    )
    torch.testing.assert_close(per_frame, out)
    no_id = model(torch.tensor(beta, dtype=torch.float32))
    np.testing.assert_allclose(
        no_id.numpy(), (mean + beta @ b_exp.T).reshape(2, 3, 7, 3), rtol=1e-5, atol=1e-5
    )
    ident = model.identity_points(torch.tensor(alpha, dtype=torch.float32))
    np.testing.assert_allclose(
        ident.numpy(), (mean + alpha @ b_id.T).reshape(2, 7, 3), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="beta has 3 dims"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="alpha has 2 dims"):
        model(torch.zeros(2, 4), torch.zeros(2, 2))


def test_gradient_reaches_beta_and_bases_are_buffers():
    model, _, _, b_exp = _random_model()
    assert not list(model.parameters())  # nothing to train: the bases are buffers
    with pytest.raises(ValueError, match="mediapipe"):
        model.evaluate([])
    beta = torch.zeros(1, 4, requires_grad=True)
    model(beta, torch.zeros(1, 5)).sum().backward()
    np.testing.assert_allclose(beta.grad[0].numpy(), b_exp.sum(0), rtol=1e-5)


def test_state_dict_round_trip(tmp_path):
    model, *_ = _random_model()
    model.backend = "mediapipe"
    model.vertex_ids = tuple(range(7))
    torch.save(model.state_dict(), tmp_path / "fm.pt")
    state = torch.load(tmp_path / "fm.pt")  # weights_only: the extra state is plain data
    assert {"mean", "id_basis", "exp_basis"} <= set(state)
    back = FaceModel.from_state_dict(state)
    assert back.backend == "mediapipe" and back.vertex_ids == tuple(range(7))
    beta, alpha = torch.randn(3, 4), torch.randn(3, 5)
    torch.testing.assert_close(back(beta, alpha), model(beta, alpha))
    # and load_state_dict into a same-shaped model restores the backend too
    other = FaceModel(np.zeros(21), np.zeros((21, 5)), np.zeros((21, 4)), "deep3d")
    other.load_state_dict(state)
    assert other.backend == "mediapipe"
    torch.testing.assert_close(other(beta, alpha), model(beta, alpha))
    # to_state / from_state: the plain-dict form checkpoints hold (fit report included)
    model.fit_report = fm.FitReport(frames=10, r2=0.5, rmse=0.1, std=0.2)
    torch.save(model.to_state(), tmp_path / "state.pt")
    again = FaceModel.from_state(torch.load(tmp_path / "state.pt"))
    assert again.backend == "mediapipe" and again.vertex_ids == tuple(range(7))
    assert again.fit_report == model.fit_report
    torch.testing.assert_close(again(beta, alpha), model(beta, alpha))
    assert FaceModel.from_state(model.state_dict()).backend == "mediapipe"


def test_bad_shapes_and_backend():
    with pytest.raises(ValueError, match="bases disagree"):
        FaceModel(np.zeros(21), np.zeros((20, 5)), np.zeros((21, 4)), "deep3d")
    with pytest.raises(ValueError, match="backend"):
        FaceModel(np.zeros(21), np.zeros((21, 5)), np.zeros((21, 4)), "flame")


# ---- BFM ---------------------------------------------------------------------------------------


def _fake_bfm(path, n_vert=150, seed=0):
    """A small file in Deep3D's BFM_model_front.mat layout (as util/load_mats.py writes it)."""
    rng = np.random.default_rng(seed)
    mat = {
        "meanshape": rng.normal(size=(1, 3 * n_vert)).astype(np.float32) + 5.0,
        "idBase": rng.normal(size=(3 * n_vert, 80)).astype(np.float32),
        "exBase": rng.normal(size=(3 * n_vert, 64)).astype(np.float32),
        "keypoints": (rng.permutation(n_vert)[:68] + 1).astype(np.float64)[None],  # 1-based
        "tri": np.ones((10, 3)),
    }
    savemat(path, mat)
    return mat


def test_from_bfm_matches_the_full_mesh(tmp_path, monkeypatch):
    mat = _fake_bfm(tmp_path / fm.BFM_NAME)
    for source in (tmp_path / fm.BFM_NAME, tmp_path, str(tmp_path)):  # the file or its folder
        model = FaceModel.from_bfm(source)
        assert (model.backend, model.n_points, model.id_dim, model.exp_dim) == (
            "deep3d",
            20,
            80,
            64,
        )
    monkeypatch.setenv(fm.BFM_ENV, str(tmp_path))
    assert fm.from_bfm().n_points == 20
    rng = np.random.default_rng(3)
    alpha, beta = rng.normal(size=80), rng.normal(size=(6, 64))
    mean = mat["meanshape"].reshape(-1, 3).astype(np.float64)
    mean -= mean.mean(0)  # Deep3D's recenter
    full = mean.reshape(-1) + mat["idBase"] @ alpha + beta @ mat["exBase"].T  # (6, 3N)
    verts = mat["keypoints"][0, 48:68].astype(int) - 1
    want = full.reshape(6, -1, 3)[:, verts]  # (6, 20, 3)
    got = model(torch.tensor(beta, dtype=torch.float32), torch.tensor(alpha, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)
    assert model.vertex_ids == tuple(verts)


def test_from_bfm_missing_file_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(fm.BFM_ENV, raising=False)
    with pytest.raises(UserError, match=rf"{fm.BFM_NAME} is needed.*{fm.BFM_ENV}"):
        FaceModel.from_bfm()
    with pytest.raises(
        UserError,
        match=rf"{fm.BFM_NAME} not found at .*Basel Face Model.*"
        r"Exp_Pca\.bin.*load_mats\.py",
    ):
        FaceModel.from_bfm(tmp_path)
    savemat(
        tmp_path / fm.BFM_NAME,
        {
            "meanshape": np.zeros((1, 30)),
            "idBase": np.zeros((30, 80)),
            "exBase": np.zeros((30, 64)),
            "keypoints": np.ones((1, 5)),
        },
    )
    with pytest.raises(UserError, match="layout"):
        FaceModel.from_bfm(tmp_path)


# ---- the mediapipe fit -------------------------------------------------------------------------


def test_mouth_indices_are_mediapipe_lips():
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as conn

    lips = sorted({i for c in conn.FACE_LANDMARKS_LIPS for i in (c.start, c.end)})
    assert list(MOUTH) == lips and len(MOUTH) == 40
    sel = fm.mouth_selection()  # (120, 1434)
    face = np.arange(fm.MP_POINTS * 3, dtype=np.float32)
    np.testing.assert_array_equal((sel @ face).reshape(40, 3), face.reshape(-1, 3)[list(MOUTH)])


def _synthetic_samples(mean, b_exp, n_clips=4, frames=60, noise=0.0, seed=0):
    """Clips whose mouth is exactly id_mouth + mean + b_exp @ beta (+ noise); invalid frames
    hold garbage, which the fit must ignore."""
    rng = np.random.default_rng(seed)
    for _ in range(n_clips):
        ident = rng.normal(size=(fm.MP_POINTS, 3)) * 3.0  # (478, 3)
        beta = rng.uniform(size=(frames, 52)).astype(np.float32)  # (F, 52) like blendshapes
        lm3d = np.repeat(ident[None], frames, 0) + rng.normal(size=(frames, fm.MP_POINTS, 3))
        mouth = ident[list(MOUTH)] + (mean + beta @ b_exp.T).reshape(frames, 40, 3)
        lm3d[:, list(MOUTH)] = mouth + noise * rng.normal(size=mouth.shape)
        valid = rng.uniform(size=frames) > 0.2
        lm3d[~valid] = 1e3 * rng.normal(size=(int((~valid).sum()), fm.MP_POINTS, 3))
        beta[~valid] = 0.0
        yield {
            "exp": beta,
            "lm3d": lm3d.astype(np.float16 if noise else np.float32),
            "id": ident.reshape(-1).astype(np.float32),
            "valid": valid,
        }


def test_fit_mediapipe_recovers_a_known_linear_model():
    rng = np.random.default_rng(7)
    mean, b_exp = rng.normal(size=120), 0.3 * rng.normal(size=(120, 52))
    model = fm.fit_mediapipe(_synthetic_samples(mean, b_exp), ridge=1e-9)  # a generator: streams
    assert (model.backend, model.n_points, model.id_dim, model.exp_dim) == (
        "mediapipe",
        40,
        1434,
        52,
    )
    np.testing.assert_allclose(model.mean.numpy(), mean, atol=1e-4)
    np.testing.assert_allclose(model.exp_basis.numpy(), b_exp, atol=1e-4)
    rep = model.fit_report
    assert rep.frames > 150 and rep.r2 > 0.999999 and rep.rmse < 1e-4
    # and eq. 1 with alpha = the clip's id gives its mouth landmarks
    clip = next(_synthetic_samples(mean, b_exp, n_clips=1, seed=5))
    v = clip["valid"]
    got = model(torch.tensor(clip["exp"][v]), torch.tensor(clip["id"]))  # (V, 40, 3)
    np.testing.assert_allclose(got.numpy(), clip["lm3d"][v][:, list(MOUTH)], atol=1e-3)


def test_fit_mediapipe_r2_with_noise_and_held_out():
    rng = np.random.default_rng(8)
    mean, b_exp = rng.normal(size=120), 0.3 * rng.normal(size=(120, 52))
    noise = 0.1
    model = FaceModel.fit_mediapipe(
        _synthetic_samples(mean, b_exp, n_clips=8, frames=100, noise=noise, seed=1), ridge=1e-6
    )
    # target variance per coordinate = |b_exp row|^2 * var(U(0,1)) on average; residual = noise
    signal = float((b_exp**2).sum(1).mean() / 12.0)
    expect = signal / (signal + noise**2)
    rep = model.fit_report
    # in-sample residual: noise^2 times (frames - 53 fitted coefficients) / frames
    assert rep.rmse == pytest.approx(noise * np.sqrt(1 - 53 / rep.frames), rel=0.05)
    assert rep.r2 == pytest.approx(expect, abs=0.03)
    held = model.evaluate(
        _synthetic_samples(mean, b_exp, n_clips=8, frames=100, noise=noise, seed=2)
    )
    assert held.r2 == pytest.approx(expect, abs=0.03) and held.r2 < rep.r2 + 0.01


def test_fit_mediapipe_without_valid_frames():
    sample = {
        "exp": np.zeros((3, 52)),
        "lm3d": np.zeros((3, 478, 3)),
        "id": np.zeros(1434),
        "valid": np.zeros(3, bool),
    }
    with pytest.raises(UserError, match="no valid frames"):
        FaceModel.fit_mediapipe([sample])


def test_fit_on_a_real_clip(shared_media, face_model):
    """The HDTF clip through the coeffs stage's MediaPipe path: how much of the mouth's motion
    do the 52 blendshapes explain linearly? Fit on the first 150 frames, test on the last 50."""
    from fd2talk.core import media
    from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage

    stage = CoeffsStage(CoeffsConfig(face_model=str(face_model)))
    arrays = stage.coefficients(
        media.iter_frames(shared_media / "hdtf_aoc_512.mp4", 256, 256, timeout=120)
    )
    stage.close()
    n = len(arrays["valid"])
    assert n == 200 and arrays["valid"].mean() > 0.95

    def part(sl):
        valid = arrays["valid"][sl]
        rows = arrays["lm3d"][sl].reshape(len(valid), -1).astype(np.float64)[valid]
        return {
            "exp": arrays["exp"][sl],
            "lm3d": arrays["lm3d"][sl],
            "id": rows.mean(0).astype(np.float32),
            "valid": valid,
        }

    model = FaceModel.fit_mediapipe([part(slice(0, 150))])
    held = model.evaluate([part(slice(150, None))])
    whole = FaceModel.fit_mediapipe([{k: arrays[k] for k in ("exp", "lm3d", "id", "valid")}])
    print(
        f"\nreal clip mouth fit: in-sample R^2 {model.fit_report.r2:.3f} (rmse "
        f"{model.fit_report.rmse:.3f} cm of std {model.fit_report.std:.3f}), held-out R^2 "
        f"{held.r2:.3f} (rmse {held.rmse:.3f} cm), all 200 frames R^2 {whole.fit_report.r2:.3f}"
    )
    assert model.fit_report.r2 > 0.8  # measured 0.91 (ridge 1e-2)
    assert held.r2 > 0.4  # measured 0.55
    assert whole.fit_report.frames == 200 and whole.fit_report.r2 > 0.8
