"""Tests of the LPIPS-VGG loss (model/nets/perceptual.py): a random VGG16 state dict saved by the test
loads through the same path as torchvision's file, LPIPS(x, x) = 0 and > 0 otherwise, gradients
reach the input but no parameter, the value equals LPIPS written out by hand from the two weight
files, and the errors for missing or wrong files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from fd2talk.core.errors import UserError
from fd2talk.model.nets.perceptual import (
    VGG16_ENV,
    VGG16_FILE,
    Perceptual,
    _lpips_heads_file,
    default_vgg16_path,
    vgg16_path,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64  # test image size (LPIPS works at any size >= 16; 256 in training)
LAYERS = (
    3,
    8,
    15,
    22,
    29,
)  # VGG16 `features` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
SHIFT = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]  # LPIPS v0.1 scaling layer
SCALE = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]


def _vgg_features():
    import torchvision

    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # VGG16 features


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised VGG16's features, saved under torchvision's key names and file
    name (only `features.*` is read, so the 500 MB classifier is left out)."""
    torch.manual_seed(0)
    features = _vgg_features()
    path = tmp_path_factory.mktemp("vgg") / VGG16_FILE
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def perceptual(vgg_file):
    return Perceptual(vgg_file)


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1  # (N, 3, H, W) in [-1, 1]


def _lpips_by_hand(vgg_file, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 from its definition, straight from the two weight files."""
    features = _vgg_features()
    state = torch.load(vgg_file, weights_only=True)
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    heads = torch.load(
        _lpips_heads_file(), map_location="cpu", weights_only=True
    )  # lin<l>.model.1.weight
    out = torch.zeros(a.shape[0])
    fa, fb = (a - SHIFT) / SCALE, (b - SHIFT) / SCALE
    level = 0
    for i, layer in enumerate(features):
        fa, fb = layer(fa), layer(fb)
        if i in LAYERS:
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            w = heads[f"lin{level}.model.1.weight"]  # (1, C, 1, 1)
            out += F.conv2d((na - nb) ** 2, w).mean(dim=(1, 2, 3))
            level += 1
    return out


def test_identical_images_give_zero(perceptual):
    x = _images(2, 1)
    with torch.no_grad():
        d = perceptual(x, x.clone())
    assert d.shape == (2,)
    assert d.abs().max() < 1e-6


def test_different_images_give_positive_distance(perceptual):
    x = _images(3, 2)
    y = _images(3, 3)
    with torch.no_grad():
        d = perceptual(x, y)
        d_near = perceptual(x, (x + 0.05 * y).clamp(-1, 1))
    assert d.shape == (3,)
    assert (d > 0).all() and (d_near > 0).all()
    assert (d_near < d).all()  # a small perturbation is closer than another image


def test_matches_lpips_definition(perceptual, vgg_file):
    """Both weight files really load: the backbone from the VGG16 file (by torchvision layer
    index) and the linear heads from the lpips wheel (not a random init)."""
    x, y = _images(2, 4), _images(2, 5)
    with torch.no_grad():
        expected = _lpips_by_hand(vgg_file, x, y)
        got = perceptual(x, y)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_gradients_reach_the_input_not_the_parameters(perceptual):
    x = _images(2, 6).requires_grad_(True)
    y = _images(2, 7)
    perceptual(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in perceptual.parameters())


def test_stays_in_eval_mode(perceptual):
    """LPIPS' heads have dropout: a trainer calling .train() on its modules must not enable it."""
    perceptual.train()
    assert not any(m.training for m in perceptual.modules())
    x, y = _images(1, 8), _images(1, 9)
    with torch.no_grad():
        assert torch.equal(perceptual(x, y), perceptual(x, y))


def test_rejects_mismatched_inputs(perceptual):
    with pytest.raises(ValueError, match="one shape"):
        perceptual(_images(1, 1), _images(2, 1))


def test_path_resolution(vgg_file, tmp_path, monkeypatch):
    monkeypatch.delenv(VGG16_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    default = tmp_path / "torch" / "hub" / "checkpoints" / VGG16_FILE
    assert default_vgg16_path() == default
    with pytest.raises(UserError, match="torchvision's default location"):
        vgg16_path()
    default.parent.mkdir(parents=True)
    default.write_bytes(vgg_file.read_bytes())
    assert vgg16_path() == default
    monkeypatch.setenv(VGG16_ENV, str(vgg_file))
    assert vgg16_path() == vgg_file  # the environment variable beats the default
    assert vgg16_path(default) == default  # and the flag beats both


def test_missing_file_error(tmp_path, monkeypatch):
    monkeypatch.delenv(VGG16_ENV, raising=False)
    missing = tmp_path / VGG16_FILE
    with pytest.raises(UserError) as e:
        Perceptual(missing)
    message = str(e.value)
    assert str(missing) in message
    assert "IMAGENET1K_V1" in message and "~/.cache/torch/hub/checkpoints" in message
    assert "--lambda-per 0" in message
    monkeypatch.setenv(VGG16_ENV, str(missing))
    with pytest.raises(UserError, match=f"\\${VGG16_ENV}"):
        Perceptual()


def test_wrong_files_error(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch state dict"):
        Perceptual(garbage)
    wrong_keys = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong_keys)
    with pytest.raises(UserError, match="has no features.0.weight"):
        Perceptual(wrong_keys)
    wrong_shapes = tmp_path / "small.pth"
    torch.manual_seed(0)
    state = {
        f"features.{k}": v[:, :1] if v.ndim == 4 else v
        for k, v in _vgg_features().state_dict().items()
    }
    torch.save(state, wrong_shapes)
    with pytest.raises(UserError, match="does not fit VGG16"):
        Perceptual(wrong_shapes)
