"""The metric math of `fd2talk-eval` on known values (model/evaluation/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fd2talk.model.evaluation import metrics as M


def _frames(seed: int, n: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_psnr_and_ssim_of_identical_frames_and_of_known_noise():
    a = _frames(0)
    assert (M.psnr(a, a) == M.PSNR_CAP).all()  # identical: capped, so means stay finite
    np.testing.assert_allclose(M.ssim(a, a), 1.0)
    # a constant offset of 10 levels: MSE = (10/255)^2 exactly -> 20 log10(25.5) = 28.13 dB
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    mid = np.full_like(a, 100)
    np.testing.assert_allclose(M.psnr(mid + 10, mid), 20 * np.log10(25.5), atol=1e-9)
    assert (M.psnr(b, a) > 28.0).all()  # clipping only lowers the error
    # SSIM against scikit-image's reference numbers for Wang et al.'s settings: a flat image
    # offset by a constant keeps the structure term at 1, the luminance term is
    # (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1)
    c1 = (0.01 * 1.0) ** 2
    m1, m2 = 100 / 255, 110 / 255
    np.testing.assert_allclose(
        M.ssim(mid + 10, mid), (2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1), atol=1e-6
    )
    noisy = np.clip(a.astype(float) + np.random.default_rng(1).normal(0, 20, a.shape), 0, 255)
    s = M.ssim(noisy.astype(np.uint8), a)
    assert ((s > 0.5) & (s < 0.99)).all()
    with pytest.raises(ValueError, match="differ in shape"):
        M.psnr(a, a[:, :16])


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
    f = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(M.fid(f, f)) < 1e-6
    # two Gaussians with the same covariance: FID = ||mu1 - mu2||^2
    assert M.fid(f + 1.0, f) == pytest.approx(8.0, rel=1e-6)
    # known closed form in 1-D: (m1 - m2)^2 + s1^2 + s2^2 - 2 s1 s2
    assert M.frechet_distance(
        np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[1.0]])
    ) == pytest.approx(1 + 4 + 1 - 2 * 2)
    with pytest.raises(ValueError, match="at least 2"):
        M.fid(f[:1], f)


def test_lse_finds_a_known_offset_and_its_confidence():
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(60, 16))
    for shift in (-4, 0, 3):
        video = np.roll(audio, -shift, axis=0)  # video window i matches audio window i + shift
        out = M.lse(video, audio, vshift=15)
        assert out["av_offset"] == -shift
        assert out["lse_d"] < 3.0 and out["lse_c"] > 2.0  # matched windows are ~0 apart
    # calc_pdist's layout: (31 shifts, W windows), the audio zero-padded at both ends
    d = M.sync_distances(np.ones((4, 2)), np.ones((4, 2)), vshift=1)
    assert d.shape == (3, 4)
    np.testing.assert_allclose(d[1], np.sqrt(2) * 1e-6, rtol=1e-6)
    np.testing.assert_allclose(d[0, 0], np.linalg.norm(np.ones(2) + 1e-6))  # against padding


def test_beat_align_on_constructed_beats():
    assert M.beat_align(np.array([10, 20]), np.array([10, 20])) == 1.0
    assert M.beat_align(np.array([10]), np.array([13])) == pytest.approx(np.exp(-9 / 18))
    # the nearest motion beat counts, and the mean is over audio beats
    assert M.beat_align(np.array([10, 40]), np.array([11, 100])) == pytest.approx(
        (np.exp(-1 / 18) + np.exp(-(60**2) / 18)) / 2
    )
    assert np.isnan(M.beat_align(np.array([]), np.array([3])))
    # motion beats: the head stops (speed minimum) at frames 25 and 75 of a swing
    t = np.arange(100)
    head = np.stack([10 * np.sin(2 * np.pi * t / 100), np.zeros(100)], 1)
    beats = M.motion_beats(head)
    assert set(beats.tolist()) <= set(range(22, 29)) | set(range(72, 79)) and len(beats) == 2


def test_speech_onsets_find_the_starts_of_bursts():
    sr = 16000
    samples = np.zeros(4 * sr, np.float32)
    rng = np.random.default_rng(0)
    starts = [0.5, 1.5, 2.6, 3.3]
    for s in starts:
        a = int(s * sr)
        samples[a : a + sr // 5] = rng.normal(0, 0.3, sr // 5)
    onsets = M.speech_onsets(samples, 100, sr)
    want = np.round(np.array(starts) * 25).astype(int)
    assert len(onsets) == len(starts)
    assert np.abs(onsets - want).max() <= 1
    assert len(M.speech_onsets(np.zeros(sr, np.float32), 25)) == 0


def test_diversity_lmd_and_pearson():
    angles = np.stack([np.arange(10.0), np.zeros(10), np.full(10, 3.0)], 1)
    assert M.diversity(angles) == pytest.approx(np.arange(10.0).std() / 3)
    lm = np.random.default_rng(0).random((5, 478, 2))
    valid = np.ones(5, bool)
    assert M.lmd(lm, lm, valid, valid) == 0.0
    moved = lm.copy()
    moved[:, list(M.LIPS)] += [0.03, 0.04]  # every lip point 0.05 away
    eye = np.linalg.norm(lm[:, 33] - lm[:, 263], axis=-1)
    assert M.lmd(moved, lm, valid, valid) == pytest.approx(np.mean(0.05 / eye))
    assert np.isnan(M.lmd(lm, lm, ~valid, valid))
    assert M.pearson(np.arange(5.0), 2 * np.arange(5.0) + 1) == pytest.approx(1.0)
    assert np.isnan(M.pearson(np.ones(5), np.arange(5.0)))
