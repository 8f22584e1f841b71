"""The re-implemented metric networks load their published layouts from local files, give
the same outputs as a plain functional forward over the same state dict, and say what is
missing when the file is not there (model/evaluation/nets.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.eval_nets import syncnet_file

from fd2talk.model.evaluation import metrics as M
from fd2talk.model.evaluation import nets as N


def _bn(x, sd, p):
    return F.batch_norm(
        x,
        sd[f"{p}.running_mean"],
        sd[f"{p}.running_var"],
        sd[f"{p}.weight"],
        sd[f"{p}.bias"],
        False,
        0.0,
        1e-5,
    )


def _reference_audio(sd, x):
    """syncnet_python's netcnnaud + netfcaud written out layer by layer."""

    def conv(x, i, **kw):
        return F.relu(
            _bn(
                F.conv2d(x, sd[f"netcnnaud.{i}.weight"], sd[f"netcnnaud.{i}.bias"], **kw),
                sd,
                f"netcnnaud.{i + 1}",
            )
        )

    x = conv(x, 0, padding=1)
    x = F.max_pool2d(conv(x, 4, padding=1), (3, 3), (1, 2))
    x = conv(conv(x, 8, padding=1), 11, padding=1)
    x = F.max_pool2d(conv(x, 14, padding=1), (3, 3), (2, 2))
    x = conv(x, 18).flatten(1)
    x = F.relu(_bn(F.linear(x, sd["netfcaud.0.weight"], sd["netfcaud.0.bias"]), sd, "netfcaud.1"))
    return F.linear(x, sd["netfcaud.3.weight"], sd["netfcaud.3.bias"])


def _reference_lip(sd, x):
    def conv(x, i, **kw):
        return F.relu(
            _bn(
                F.conv3d(x, sd[f"netcnnlip.{i}.weight"], sd[f"netcnnlip.{i}.bias"], **kw),
                sd,
                f"netcnnlip.{i + 1}",
            )
        )

    x = F.max_pool3d(conv(x, 0, stride=(1, 2, 2)), (1, 3, 3), (1, 2, 2))
    x = F.max_pool3d(
        conv(x, 4, stride=(1, 2, 2), padding=(0, 1, 1)), (1, 3, 3), (1, 2, 2), (0, 1, 1)
    )
    x = conv(conv(x, 8, padding=(0, 1, 1)), 11, padding=(0, 1, 1))
    x = F.max_pool3d(conv(x, 14, padding=(0, 1, 1)), (1, 3, 3), (1, 2, 2))
    x = conv(x, 18).flatten(1)
    x = F.relu(_bn(F.linear(x, sd["netfclip.0.weight"], sd["netfclip.0.bias"]), sd, "netfclip.1"))
    return F.linear(x, sd["netfclip.3.weight"], sd["netfclip.3.bias"])


def test_syncnet_loads_the_published_layout_and_matches_a_plain_forward(tmp_path):
    path, sd = syncnet_file(tmp_path)
    net = N.load_syncnet(str(path))
    # syncnet_python's S: these are the published state dict's names and shapes
    assert tuple(sd["netcnnaud.0.weight"].shape) == (64, 1, 3, 3)
    assert tuple(sd["netcnnlip.0.weight"].shape) == (96, 3, 5, 7, 7)
    assert tuple(sd["netcnnlip.18.weight"].shape) == (512, 256, 1, 6, 6)
    assert tuple(sd["netfclip.3.weight"].shape) == (1024, 512)
    g = torch.Generator().manual_seed(1)
    aud = torch.randn(3, 1, 13, 20, generator=g)
    lip = torch.rand(2, 3, 5, 224, 224, generator=g) * 255
    with torch.no_grad():
        torch.testing.assert_close(net.forward_aud(aud), _reference_audio(sd, aud))
        torch.testing.assert_close(
            net.forward_lip(lip), _reference_lip(sd, lip), rtol=1e-4, atol=1e-3
        )


def test_syncnet_weights_missing_or_of_another_layout_are_unavailable(tmp_path, monkeypatch):
    monkeypatch.delenv(N.SYNCNET_ENV, raising=False)
    with pytest.raises(N.Unavailable, match="no weights given .*syncnet_v2.model"):
        N.load_syncnet(None)
    with pytest.raises(N.Unavailable, match="nowhere.model not found .*download_model.sh"):
        N.load_syncnet(str(tmp_path / "nowhere.model"))
    bad = tmp_path / "other.model"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(N.Unavailable, match="not syncnet_v2.model's layout"):
        N.load_syncnet(str(bad))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(N.Unavailable, match="not a readable weights file"):
        N.load_syncnet(str(junk))
    path, sd = syncnet_file(tmp_path)
    old = tmp_path / "pre041.model"  # saved before PyTorch 0.4.1: no num_batches_tracked
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, old)
    assert isinstance(N.load_syncnet(str(old)), N.SyncNet)
    monkeypatch.setenv(N.SYNCNET_ENV, str(path))
    assert isinstance(N.load_syncnet(None), N.SyncNet)  # the environment variable is read


def test_syncnet_windows_follow_syncnet_python(tmp_path):
    path, _ = syncnet_file(tmp_path)
    net = N.load_syncnet(str(path))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    samples = rng.normal(0, 0.1, 16 * 640).astype(np.float32)
    lips, auds = N.syncnet_embeddings(net, frames, samples, batch=4)
    assert lips.shape == auds.shape == (11, 1024)  # min(16, 16) - 5 windows
    # window 3: frames 3..7 (BGR, 224 px) and MFCC columns 12..31, as evaluate() slices them
    import cv2

    cc = torch.from_numpy(N.mfcc(samples).astype(np.float32))[None, None]
    assert cc.shape[2] == 13 and cc.shape[3] >= 4 * 10 + 20
    bgr = np.stack(
        [cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA)[..., ::-1] for f in frames[3:8]]
    )
    with torch.no_grad():
        want_lip = net.forward_lip(
            torch.from_numpy(bgr.astype(np.float32)).permute(3, 0, 1, 2)[None]
        )
        want_aud = net.forward_aud(cc[..., 12:32])
    np.testing.assert_allclose(lips[3], want_lip[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(auds[3], want_aud[0].numpy(), rtol=1e-4, atol=1e-4)
    out = M.lse(lips, auds)
    assert set(out) == {"lse_d", "lse_c", "av_offset"} and -15 <= out["av_offset"] <= 15
    with pytest.raises(ValueError, match="at least 6 frames"):
        N.syncnet_embeddings(net, frames[:5], samples)


def _randomise_bn(net, seed: int):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_hopenet_loads_the_published_layout_and_reads_angles_as_deep_head_pose(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3])
    net = N.Hopenet()
    sd = net.state_dict()
    # deep-head-pose's names: torchvision's ResNet-50 trunk, fc_yaw/pitch/roll, fc_finetune
    assert {k for k in sd if not k.startswith("fc_")} == {
        k for k in ref.state_dict() if not k.startswith("fc.")
    }
    assert tuple(sd["fc_yaw.weight"].shape) == (66, 2048)
    assert tuple(sd["fc_finetune.weight"].shape) == (3, 2051)
    _randomise_bn(net, 1)
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save(net.state_dict(), path)
    loaded = N.load_hopenet(str(path))
    frames = np.random.default_rng(0).integers(0, 256, (3, 256, 320, 3), dtype=np.uint8)
    got = N.hopenet_angles(loaded, frames, batch=2)
    # the plain forward: torchvision's trunk with the same weights, then the expectation
    ref.load_state_dict(
        {k: v for k, v in net.state_dict().items() if not k.startswith("fc_")}
        | {"fc.weight": ref.fc.weight, "fc.bias": ref.fc.bias}
    )
    ref.eval()
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(224, 280), mode="bilinear", align_corners=False, antialias=True)
    x = x[:, :, :, 28:252]
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        t = ref.layer4(
            ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))))
        )
        feat = F.avg_pool2d(t, 7).flatten(1)
        want = [
            (
                F.softmax(feat @ sd[f"fc_{a}.weight"].T + sd[f"fc_{a}.bias"], 1)
                * torch.arange(66.0)
            ).sum(1)
            * 3
            - 99
            for a in ("yaw", "pitch", "roll")
        ]
    np.testing.assert_allclose(got, torch.stack(want, 1).numpy(), rtol=1e-4, atol=1e-3)
    assert ((got > -99) & (got < 99)).all()
    with pytest.raises(N.Unavailable, match="hopenet_robust_alpha1.pkl"):
        N.load_hopenet(str(tmp_path / "missing.pkl"))
    torch.save({k: v for k, v in sd.items() if k != "fc_finetune.weight"}, tmp_path / "cut.pkl")
    with pytest.raises(N.Unavailable, match="missing .'fc_finetune.weight'."):
        N.load_hopenet(str(tmp_path / "cut.pkl"))


@pytest.mark.slow  # over 10 s: out of the fast subset
def test_fid_inception_loads_a_local_file_through_pytorch_fid_and_never_downloads(
    tmp_path, monkeypatch
):
    from pytorch_fid import inception as fid_inception

    def no_network(*a, **k):
        raise AssertionError("pytorch-fid tried to download")

    torch.manual_seed(0)
    net = N.fid_inception_network()
    _randomise_bn(net, 2)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    monkeypatch.setattr(fid_inception, "load_state_dict_from_url", no_network)
    loaded = N.load_inception(str(path))
    assert fid_inception.load_state_dict_from_url is no_network  # restored after the build
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    got = N.inception_features(loaded, frames)
    # the plain forward: pytorch-fid's network up to pool3 on RGB resized to 299, in [-1, 1]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    net.eval()
    with torch.no_grad():
        for name in (
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "maxpool2",
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
            "avgpool",
        ):
            x = getattr(net, name)(x)
    assert got.shape == (2, 2048)
    np.testing.assert_allclose(got, x.flatten(1).numpy(), rtol=1e-4, atol=1e-4)
    # a set against itself is 0, up to pytorch-fid's singular-covariance path: where sqrtm of
    # the (here all but zero) covariance product is not finite, which depends on the CPU's
    # LAPACK, it adds eps = 1e-6 to the diagonal, which moves the result by -2 * 2048 * eps
    # (-0.004096, seen on an AMD EPYC); 0 within that and 1e-3
    feats = np.concatenate([got] * 2)
    assert M.fid(feats, feats) == pytest.approx(0, abs=2 * 2048 * 1e-6 + 1e-3)
    monkeypatch.delenv(N.INCEPTION_ENV, raising=False)
    with pytest.raises(N.Unavailable, match="FID: no weights given .*pt_inception-2015-12-05"):
        N.load_inception(None)
