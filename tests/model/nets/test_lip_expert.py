"""model/nets/lip_expert.py: shapes, P_sync range, losses, windows, make_pairs, identity invariance,
learning sync on synthetic data, and gradients into beta through the face model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fd2talk.model.nets.face_model import FaceModel
from fd2talk.model.nets.lip_expert import (
    PRESETS,
    LipExpert,
    LipExpertConfig,
    accuracy,
    expert_loss,
    make_pairs,
    normalize_mouth,
    sync_loss,
    windows,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_and_p_sync_range(preset):
    torch.manual_seed(0)
    cfg = PRESETS[preset]
    expert = LipExpert(cfg, n_points=20, audio_dim=80)
    mouth, audio = torch.randn(6, cfg.window, 20, 3), torch.randn(6, cfg.window, 80)
    v, a = expert.embed_mouth(mouth), expert.embed_audio(audio)
    assert v.shape == a.shape == (6, cfg.embed_dim)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(6))
    assert (v >= 0).all() and (a >= 0).all()  # post-ReLU: the cosine is in [0, 1]
    p = expert(mouth, audio)
    assert p.shape == (6,) and (p >= cfg.eps).all() and (p <= 1).all()
    torch.testing.assert_close(p, (v * a).sum(-1).clamp(cfg.eps, 1))
    with pytest.raises(ValueError, match="mouth must be"):
        expert(torch.randn(6, cfg.window + 1, 20, 3), torch.randn(6, cfg.window + 1, 80))
    with pytest.raises(ValueError, match="audio must be"):
        expert.embed_audio(torch.randn(6, cfg.window, 81))


def test_deterministic_init():
    torch.manual_seed(3)
    a = LipExpert(PRESETS["tiny"], 40, 16)
    torch.manual_seed(3)
    b = LipExpert(PRESETS["tiny"], 40, 16)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


def test_losses():
    p = torch.tensor([0.9, 0.2, 1e-4])
    assert sync_loss(p).item() == pytest.approx(
        -(math.log(0.9) + math.log(0.2) + math.log(1e-4)) / 3, rel=1e-6
    )
    label = torch.tensor([1.0, 0.0, 0.0])
    want = -(math.log(0.9) + math.log(0.8) + math.log(1 - 1e-4)) / 3
    assert expert_loss(p, label).item() == pytest.approx(want, rel=1e-6)
    assert accuracy(p, label) == 1.0 and accuracy(p, 1 - label) == 0.0
    p = torch.tensor([1.0, 0.3, 0.7, 1.0])  # P_sync can be exactly 1: logs clamp like torch's
    label = torch.tensor([0.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(
        expert_loss(p, label), torch.nn.functional.binary_cross_entropy(p, label)
    )


def test_windows():
    x = torch.arange(2 * 7 * 3).reshape(2, 7, 3)
    w = windows(x, 5)  # (N, F - W + 1, W, ...)
    assert w.shape == (2, 3, 5, 3)
    for s in range(3):
        assert torch.equal(w[:, s], x[:, s : s + 5])
    with pytest.raises(ValueError, match="fewer than the window"):
        windows(x[:, :4], 5)


def _indexed(n, f, m=2, d=3):
    """Mouth and audio whose values are their frame index (and sequence index in the mouth)."""
    t = torch.arange(f, dtype=torch.float32)
    mouth = (
        (t[None, :, None, None] + 1000 * torch.arange(n)[:, None, None, None])
        .expand(n, f, m, 3)
        .clone()
    )
    audio = t[None, :, None].expand(n, f, d).clone()
    return mouth, audio


def test_make_pairs_labels_and_shifts():
    n, f, win, shift = 16, 25, 5, 3
    mouth, audio = _indexed(n, f)
    valid = torch.ones(n, f, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    mw, aw, label = make_pairs(mouth, audio, valid, window=win, min_shift=shift, generator=g)
    assert mw.shape == (2 * n, win, 2, 3) and aw.shape == (2 * n, win, 3)
    assert label.tolist() == [1.0] * n + [0.0] * n and label.dtype == torch.float32
    seq = (mw[:, 0, 0, 0] // 1000).long()
    m_start = mw[:, 0, 0, 0] % 1000
    a_start = aw[:, 0, 0]
    assert seq.tolist() == list(range(n)) * 2  # one pair of each kind per sequence
    assert torch.equal(
        mw[:, :, 0, 0] % 1000 - m_start[:, None], torch.arange(win).float().expand(2 * n, win)
    )  # contiguous windows
    assert torch.equal(m_start[:n], a_start[:n])  # in sync
    shifts = (a_start[n:] - m_start[n:]).abs()
    assert (shifts >= shift).all() and (a_start[n:] + win <= f).all()
    assert torch.equal(m_start[:n], m_start[n:])  # the negative reuses the positive's mouth
    # both signs of shift and many starts occur
    assert (a_start[n:] > m_start[n:]).any() and (a_start[n:] < m_start[n:]).any()
    assert len(set(m_start.tolist())) > 5
    # reproducible with the same generator seed, different with another
    again = make_pairs(
        mouth, audio, valid, window=win, min_shift=shift, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again[1], aw)
    other = make_pairs(
        mouth, audio, valid, window=win, min_shift=shift, generator=torch.Generator().manual_seed(1)
    )
    assert not torch.equal(other[1], aw)


def test_make_pairs_prefers_valid_windows():
    n, f = 32, 25
    mouth, audio = _indexed(n, f)
    valid = torch.ones(n, f, dtype=torch.bool)
    valid[:, 10:12] = False  # valid windows start at 0..5 and 12..20
    valid[0, 5:] = False  # sequence 0: one valid run of 5 frames: no valid partner
    g = torch.Generator().manual_seed(0)
    mw, aw, _ = make_pairs(mouth, audio, valid, generator=g)
    m_start = (mw[:, 0, 0, 0] % 1000).long()
    a_start = aw[:, 0, 0].long()
    for i in range(1, n):  # both windows fully valid
        for s in (m_start[i], a_start[i], a_start[n + i]):
            assert valid[i, s : s + 5].all(), (i, s)
    assert m_start[0] == 0 and a_start[0] == 0  # mouth valid, the shifted audio cannot be
    assert (a_start[n] - m_start[n]).abs() >= 3
    none = torch.zeros(2, f, dtype=torch.bool)  # nothing valid: windows anywhere
    mw, aw, label = make_pairs(mouth[:2], audio[:2], none, generator=g)
    assert mw.shape[0] == 4 and ((aw[2:, 0, 0] - mw[2:, 0, 0, 0] % 1000).abs() >= 3).all()
    with pytest.raises(ValueError, match="no audio shift"):
        make_pairs(mouth[:, :7], audio[:, :7], valid[:, :7], window=5, min_shift=3)


def test_mouth_normalisation_removes_identity_and_scale():
    torch.manual_seed(0)
    expert = LipExpert(PRESETS["tiny"], 20, 8)
    motion = 0.1 * torch.randn(4, 5, 20, 3)
    motion = motion - motion.mean(1, keepdim=True)  # so each window's mean mouth is the face
    face = torch.randn(1, 1, 20, 3)
    other = 2.5 * torch.randn(1, 1, 20, 3) + 7.0  # another identity, size and position
    a, b = face + motion, other + motion * (normalize_scale(other) / normalize_scale(face))
    torch.testing.assert_close(normalize_mouth(a), normalize_mouth(b), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(expert.embed_mouth(a), expert.embed_mouth(b), rtol=1e-4, atol=1e-4)
    # any motion: a scaled and moved copy of the same mouth gives the same input and embedding
    c = face + 0.1 * torch.randn(4, 5, 20, 3)
    torch.testing.assert_close(
        expert.embed_mouth(3.0 * c - 2.0), expert.embed_mouth(c), rtol=1e-4, atol=1e-4
    )
    assert normalize_mouth(face.expand(1, 5, 20, 3)).abs().max() < 1e-5  # a still mouth: 0


def normalize_scale(shape: torch.Tensor) -> torch.Tensor:
    c = shape - shape.mean(-2, keepdim=True)
    return c.square().sum(-1).mean(-1).sqrt()[..., None, None]


def _synthetic(n, g, f=25, m=20, d_a=16):
    """Talking data: a per-frame 'energy' drives both an audio feature direction and the
    mouth's opening; identities differ in shape, size and position."""
    e = torch.rand(n, f + 2, generator=g)
    e = 2 * (0.25 * e[:, :-2] + 0.5 * e[:, 1:-1] + 0.25 * e[:, 2:]) - 1  # (N, F) smooth energy
    audio = e[..., None] * torch.linspace(-1, 1, d_a) + 0.3 * torch.randn(n, f, d_a, generator=g)
    opening = torch.zeros(m, 3)
    opening[:, 1] = torch.linspace(-1, 1, m)  # lower points down, upper up
    face = torch.randn(n, 1, m, 3, generator=g)
    size = 0.5 + 1.5 * torch.rand(n, 1, 1, 1, generator=g)
    mouth = size * (face + 0.2 * e[..., None, None] * opening)
    mouth = mouth + 0.01 * torch.randn(n, f, m, 3, generator=g)
    return mouth, audio, torch.ones(n, f, dtype=torch.bool)


def test_learns_sync_on_synthetic_data():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    expert = LipExpert(PRESETS["tiny"], 20, 16)
    opt = torch.optim.Adam(expert.parameters(), lr=2e-3)
    for _ in range(150):
        mw, aw, label = make_pairs(*_synthetic(64, g), generator=g)
        loss = expert_loss(expert(mw, aw), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    expert.eval()
    with torch.no_grad():
        mw, aw, label = make_pairs(*_synthetic(512, g), generator=g)
        p = expert(mw, aw)
    acc = accuracy(p, label)
    print(
        f"\nlip expert on held-out synthetic pairs: accuracy {acc:.3f} (chance 0.5), mean "
        f"P_sync in-sync {p[label == 1].mean():.3f}, off-sync {p[label == 0].mean():.3f}"
    )
    assert acc > 0.75  # measured 0.84
    assert p[label == 1].mean() > p[label == 0].mean() + 0.3


def test_gradient_flows_through_frozen_expert_into_beta():
    """The motion trainer's path: beta -> eq. 1 mouth -> sliding windows -> frozen expert."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    face = FaceModel(
        rng.normal(size=60), rng.normal(size=(60, 80)), rng.normal(size=(60, 64)), "deep3d"
    )
    expert = LipExpert(LipExpertConfig(width=16, embed_dim=16, layers=1), 20, 8)
    expert.requires_grad_(False).eval()
    beta = torch.randn(2, 25, 64, requires_grad=True)  # (N, F, D_exp) predicted x0
    alpha = torch.randn(2, 80)
    audio = torch.randn(2, 25, 8)
    mouth = face(beta, alpha)  # (N, F, 20, 3)
    mw = windows(mouth, 5).flatten(0, 1)  # (N * 21, 5, 20, 3)
    aw = windows(audio, 5).flatten(0, 1)  # (N * 21, 5, 8)
    loss = sync_loss(expert(mw, aw))
    loss.backward()
    assert torch.isfinite(loss) and beta.grad is not None
    assert torch.isfinite(beta.grad).all() and beta.grad.abs().sum() > 0
    assert all(p.grad is None for p in expert.parameters())
