"""Deep3D R-Net: the epoch_20.pth layout loads, 5-point alignment, outputs, file errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends import deep3d as D
from fd2talk.pipeline.backends import landmarker as L

FACES = ("000002.jpg", "000031.jpg", "015259.jpg", "vd006.png", "vd025.png")
# A plausible standard face (x right, y up, z out; Deep3D's units), for a self-written .mat.
STD5 = np.array(
    [
        [-0.31, 0.29, 0.13],
        [0.31, 0.29, 0.13],
        [0.0, -0.05, 0.55],
        [-0.25, -0.38, 0.22],
        [0.25, -0.38, 0.22],
    ],
    np.float32,
)


def write_lm3d_mat(folder):
    """A `similarity_Lm3D_all.mat` whose 68 points give STD5 through Deep3D's 68 -> 5 rule."""
    lm = np.zeros((68, 3), np.float32)
    lm[30] = STD5[2]  # nose tip (1-based 31)
    lm[[36, 39]] = STD5[0] + [[-0.05, 0, 0], [0.05, 0, 0]]  # eye corners, centred on STD5
    lm[[42, 45]] = STD5[1] + [[-0.05, 0, 0], [0.05, 0, 0]]
    lm[48], lm[54] = STD5[3], STD5[4]  # mouth corners
    folder.mkdir(parents=True, exist_ok=True)
    savemat(str(folder / D.LM3D_NAME), {"lm": lm})
    return folder


def read_face(media, name):
    image = np.asarray(Image.open(media / "faces" / name).convert("RGB"))
    det = np.loadtxt(media / "faces" / "detections" / (name.rsplit(".", 1)[0] + ".txt"))
    return image, det.reshape(5, 2)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return D.prepare_rnet(D.build_rnet(), "cpu")


def test_checkpoint_layout_round_trip(net, tmp_path):
    state = net.state_dict()
    assert all(k.startswith(("backbone.", "final_layers.")) for k in state)
    assert not any(k.startswith("backbone.fc") for k in state)
    heads = [tuple(state[f"final_layers.{i}.weight"].shape) for i in range(7)]
    assert heads == [(d, 2048, 1, 1) for d in (80, 64, 80, 3, 27, 2, 1)]
    path = tmp_path / D.CHECKPOINT_NAME  # Deep3D's save_networks layout
    torch.save({"net_recon": state, "opt_00": {"state": {}, "param_groups": []}}, path)
    loaded = D.load_rnet(path, "cpu")
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-4)
    # DataParallel-saved ("module.") keys load too
    torch.save({"net_recon": {f"module.{k}": v for k, v in state.items()}}, path)
    assert D.load_rnet(path, "cpu") is not None


def test_bad_checkpoints_are_prep_errors(net, tmp_path, monkeypatch):
    monkeypatch.delenv(D.CHECKPOINT_ENV, raising=False)
    with pytest.raises(PrepError, match="epoch_20.pth.*Deep3DFaceRecon_pytorch"):
        D.checkpoint_path(None)
    with pytest.raises(PrepError, match="not found.*Deep3DFaceRecon_pytorch"):
        D.checkpoint_path(tmp_path / "missing.pth")
    monkeypatch.setenv(D.CHECKPOINT_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(PrepError, match=D.CHECKPOINT_ENV):
        D.checkpoint_path(None)
    bad = tmp_path / "bad.pth"
    torch.save({"model": {}}, bad)
    with pytest.raises(PrepError, match="no 'net_recon'"):
        D.load_rnet(bad, "cpu")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("final_layers.6")}
    torch.save({"net_recon": state}, bad)
    with pytest.raises(PrepError, match="missing.*final_layers.6"):
        D.load_rnet(bad, "cpu")
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PrepError, match="cannot read"):
        D.load_rnet(bad, "cpu")


def test_missing_lm3d_is_a_prep_error(tmp_path, monkeypatch):
    monkeypatch.delenv(D.BFM_ENV, raising=False)
    with pytest.raises(PrepError, match="similarity_Lm3D_all.mat.*BFM"):
        D.lm3d_path(None)
    with pytest.raises(PrepError, match="not found.*BFM folder"):
        D.lm3d_path(tmp_path)
    monkeypatch.setenv(D.BFM_ENV, str(write_lm3d_mat(tmp_path / "bfm")))
    np.testing.assert_allclose(D.load_lm3d(), STD5, atol=1e-6)  # eye centre = mean of corners


def test_outputs_and_split(net):
    crops = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    whole = D.rnet_forward(net, crops).numpy()
    assert whole.shape == (3, 257) and whole.dtype == np.float32
    batched = D.bare_inference(net, crops, batch_size=2)
    np.testing.assert_allclose(batched, whole, rtol=1e-4, atol=1e-4)  # batching changes nothing
    parts = D.split_coeffs(whole)
    assert {k: v.shape[1] for k, v in parts.items()} == {
        "id": 80,
        "exp": 64,
        "tex": 80,
        "angles": 3,
        "gamma": 27,
        "trans": 3,
    }
    np.testing.assert_array_equal(np.concatenate(list(parts.values()), 1), whole)


def test_align_moves_pixels_and_points_together(tmp_path):
    """Dots painted at the 5 points are found in the aligned crop where align_img says."""
    lm3d = D.load_lm3d(write_lm3d_mat(tmp_path / "bfm"))
    h, w = 300, 260
    image = np.full((h, w, 3), 200, np.uint8)
    points = np.array([[100, 120], [162, 116], [133, 158], [108, 196], [158, 192]], float)
    colours = np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1]] * 255
    yy, xx = np.mgrid[0:h, 0:w]
    for (px, py), col in zip(points, colours, strict=True):
        image[(xx - px) ** 2 + (yy - py) ** 2 <= 9] = col
    crop, params, lm_new = D.align_img(image, points, lm3d)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert params[:2].tolist() == [w, h]
    rows = np.c_[lm_new[:, 0], 223 - lm_new[:, 1]]  # Deep3D's points point y up
    iod = np.linalg.norm(rows[1] - rows[0])
    std_iod = D.RESCALE_FACTOR * np.linalg.norm(lm3d[1, :2] - lm3d[0, :2])
    assert iod == pytest.approx(std_iod, rel=0.1)  # scaled to Deep3D's face size
    cy, cx = np.mgrid[0:224, 0:224]
    for k, (px, py) in enumerate(rows):
        c = colours[k].astype(int)
        near = (cx - px) ** 2 + (cy - py) ** 2 < 12**2
        blob = near & (np.abs(crop.astype(int) - c).sum(-1) < 150)
        assert blob.sum() > 5
        found = np.array([cx[blob].mean(), cy[blob].mean()])
        assert np.linalg.norm(found - [px, py]) < 1.5


def test_align_real_faces_to_standard_positions(shared_media):
    lm3d = D.load_lm3d(shared_media / "bfm")
    # where a frontal face's points land in Deep3D's 224 crop (rows, y down)
    std = np.c_[112 + D.RESCALE_FACTOR * lm3d[:, 0], 111 - D.RESCALE_FACTOR * lm3d[:, 1]]
    for name in FACES:
        image, det = read_face(shared_media, name)
        crop, _, lm_new = D.align_img(image, det, lm3d)
        assert crop.shape == (224, 224, 3)
        rows = np.c_[lm_new[:, 0], 223 - lm_new[:, 1]]
        err = np.linalg.norm(rows - std, axis=1)
        assert err.mean() < 16, (name, err)  # pixels of 224; yaw moves the nose most
        iod = np.linalg.norm(rows[1] - rows[0])
        assert iod == pytest.approx(np.linalg.norm(std[1] - std[0]), rel=0.2), (
            name
        )  # yaw foreshortens


def test_mediapipe_five_points_match_detections(shared_media, face_model):
    lm3d = D.load_lm3d(shared_media / "bfm")
    for name in FACES:
        image, det = read_face(shared_media, name)
        with L.Landmarker(face_model) as lmk:
            frame = lmk.detect(image, 0)
        assert frame.found, name
        p5 = L.five_points(frame.landmarks)
        iod = np.linalg.norm(det[1] - det[0])
        err = np.linalg.norm(p5 - det, axis=1) / iod
        assert err.mean() < 0.1 and err.max() < 0.2, (name, err)
        # and the alignment they give agrees with the detections' one
        _, p_mp, _ = D.align_img(image, p5, lm3d)
        _, p_det, _ = D.align_img(image, det, lm3d)
        assert p_mp[2] == pytest.approx(p_det[2], rel=0.1), name  # scale
        assert np.abs(p_mp[3:] - p_det[3:]).max() < 0.1 * iod, name  # centre, pixels
