"""Tests for model/diffusion.py: schedule, forward process, x0 loss, eq. 5 sampler."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from fd2talk.model.diffusion import Diffusion, DiffusionConfig

T = 1000


@pytest.fixture(scope="module")
def diff() -> Diffusion:
    return Diffusion(DiffusionConfig())


def np_alphas_bar(T: int = T, b0: float = 1e-4, b1: float = 0.02) -> np.ndarray:
    """Independent float64 schedule: ab_t = prod_{s<=t} (1 - beta_s), beta linear."""
    betas = b0 + (b1 - b0) * np.arange(T, dtype=np.float64) / (T - 1)
    return np.cumprod(1.0 - betas)


def toy_predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A simple analytic 'network': x0_hat = 0.5 tanh(x_t) + 0.2 mean_dim1(x_t) + t / 1000.

    The mean over dim 1 (frames) couples positions, so inpainting's x_t replacement matters.
    """
    return (
        0.5 * torch.tanh(x)
        + 0.2 * x.mean(dim=1, keepdim=True)
        + (t.to(x.dtype) / 1000.0).view(-1, *([1] * (x.dim() - 1)))
    )


def np_sample(shape, steps, eta, seed, known=None, noise_dtype=torch.float64):
    """Float64 numpy re-implementation of the eq. 5 sampler, same noise draw order.

    Noise is drawn from a torch generator in `noise_dtype` (what the sampler under test uses:
    torch draws different numbers per dtype), then everything runs in float64 numpy.
    """
    ab = np_alphas_bar()
    d = steps - 1
    ts = (
        [T - 1]
        if steps == 1
        else [math.floor(Fraction((T - 1) * (d - i), d) + Fraction(1, 2)) for i in range(steps)]
    )
    g = torch.Generator().manual_seed(seed)

    def randn() -> np.ndarray:
        return torch.randn(shape, generator=g, dtype=noise_dtype).double().numpy()

    x = randn()
    for i, t in enumerate(ts):
        tp = ts[i + 1] if i + 1 < len(ts) else None
        x0 = 0.5 * np.tanh(x) + 0.2 * x.mean(axis=1, keepdims=True) + t / 1000.0
        if known is not None:
            x0 = np.where(known[1], known[0], x0)
        a, ap = ab[t], (ab[tp] if tp is not None else 1.0)
        sig = eta * np.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        x = np.sqrt(ap) * x0 + np.sqrt(1 - ap - sig**2) / np.sqrt(1 - a) * (x - np.sqrt(a) * x0)
        if sig > 0:
            x = x + sig * randn()
        if known is not None and tp is not None:
            qs = np.sqrt(ab[tp]) * known[0] + np.sqrt(1 - ab[tp]) * randn()
            x = np.where(known[1], qs, x)
    return x


# ---------------------------------------------------------------- schedule


def test_schedule_invariants(diff: Diffusion) -> None:
    assert diff.T == T and diff.betas.shape == (T,) and diff.alphas_bar.shape == (T,)
    assert diff.betas.dtype == torch.float64 and diff.alphas_bar.dtype == torch.float64
    assert diff.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert diff.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    ab = diff.alphas_bar
    assert bool((ab[1:] < ab[:-1]).all()) and bool((ab > 0).all()) and bool((ab < 1).all())
    assert ab[0].item() == pytest.approx(1 - 1e-4, rel=1e-12)
    assert ab[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)  # literal
    np.testing.assert_allclose(ab.numpy(), np_alphas_bar(), rtol=1e-12)


def test_config_validation_and_paper_defaults() -> None:
    for bad in (
        {"steps": 0},
        {"beta_start": 0.0},
        {"beta_end": 1.0},
        {"sample_steps": 0},
        {"sample_steps": 1001},
        {"eta": -0.1},
    ):
        with pytest.raises(ValueError):
            DiffusionConfig(**bad)
    paper = DiffusionConfig()  # the defaults are the paper's: T = 1000, 50 DDIM steps
    assert (paper.steps, paper.beta_start, paper.beta_end, paper.sample_steps, paper.eta) == (
        1000,
        1e-4,
        0.02,
        50,
        0.0,
    )


def test_eta1_sigma_is_ddpm_posterior_variance(diff: Diffusion) -> None:
    # consecutive steps, eta = 1: sigma_t^2 = (1 - ab_{t-1}) / (1 - ab_t) * beta_t
    for t in (1, 10, 500, 999):
        _, _, sigma, _ = diff.step_coefs(t, t - 1, 1.0)
        ab = diff.alphas_bar
        expect = (1 - ab[t - 1]) / (1 - ab[t]) * diff.betas[t]
        assert sigma**2 == pytest.approx(expect.item(), rel=1e-9)
    assert diff.step_coefs(0, -1, 1.0)[:3] == (1.0, 0.0, 0.0)  # last step returns x0_hat


# ---------------------------------------------------------------- timesteps


def test_timesteps_rule(diff: Diffusion) -> None:
    ts = diff.timesteps(50)
    assert ts[:5] == [999, 979, 958, 938, 917] and ts[-4:] == [61, 41, 20, 0]
    assert diff.timesteps() == ts  # default = config.sample_steps
    assert diff.timesteps(1) == [999] and diff.timesteps(2) == [999, 0]
    assert diff.timesteps(T) == list(range(T - 1, -1, -1))
    for n in (2, 3, 7, 49, 50, 333, 999):
        ts = diff.timesteps(n)
        assert len(ts) == n and ts[0] == T - 1 and ts[-1] == 0
        assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
        expect = [
            math.floor(Fraction((T - 1) * (n - 1 - i), n - 1) + Fraction(1, 2)) for i in range(n)
        ]
        assert ts == expect
    for bad in (0, T + 1):
        with pytest.raises(ValueError):
            diff.timesteps(bad)


# ---------------------------------------------------------------- forward process


def test_sample_t(diff: Diffusion) -> None:
    t = diff.sample_t(20000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and t.dtype == torch.int64
    assert int(t.min()) == 0 and int(t.max()) == T - 1
    assert abs(t.double().mean().item() - (T - 1) / 2) < 10
    t2 = diff.sample_t(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)


def test_q_sample_formula_broadcast_dtype(diff: Diffusion) -> None:
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 25, 6, generator=g)  # (N, F, D)
    noise = torch.randn(3, 25, 6, generator=g)
    t = torch.tensor([0, 400, 999])
    x_t = diff.q_sample(x0, t, noise)
    assert x_t.shape == x0.shape and x_t.dtype == torch.float32
    ab = np_alphas_bar()[t.numpy()][:, None, None]
    expect = np.sqrt(ab) * x0.double().numpy() + np.sqrt(1 - ab) * noise.double().numpy()
    np.testing.assert_allclose(x_t.numpy(), expect, rtol=1e-5, atol=1e-6)
    assert diff.q_sample(x0.double(), t, noise.double()).dtype == torch.float64


def test_q_sample_statistics(diff: Diffusion) -> None:
    g = torch.Generator().manual_seed(2)
    n, c = 200000, 1.5
    for t in (0, 250, 999):
        x0 = torch.full((n,), c)
        x_t = diff.q_sample(x0, torch.full((n,), t), torch.randn(n, generator=g))
        ab = diff.alphas_bar[t].item()
        assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * c, abs=0.01)
        assert x_t.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.01, abs=1e-4)


# ---------------------------------------------------------------- loss


def test_loss_zero_for_perfect_predictor(diff: Diffusion) -> None:
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 25, 52, generator=g, dtype=torch.float64)
    out = diff.loss(lambda x_t, t: x0, x0, generator=g)
    assert out["loss"].item() == 0.0
    assert set(out) >= {"loss", "x0_hat", "t", "x_t"} and out["t"].shape == (4,)

    def invert(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # uses the true noise
        ab = diff.alphas_bar[t].view(-1, 1, 1)
        return (x_t - (1 - ab).sqrt() * noise) / ab.sqrt()

    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 900])
    out = diff.loss(invert, x0, t=t, noise=noise)
    assert out["loss"].item() < 1e-18
    assert torch.equal(out["x_t"], diff.q_sample(x0, t, noise))


def test_loss_weighted(diff: Diffusion) -> None:
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 5, 3, generator=g)
    valid = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)  # (N, F)

    def pred(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x_t)
        out[~valid] = 1e6  # huge error where invalid must not count
        return out

    out = diff.loss(pred, x0, weight=valid[..., None], generator=g)  # (N, F, 1)
    expect = x0[valid].square().sum() / (valid.sum() * 3)
    assert out["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    # unweighted = plain mean; fractional weights; all-zero weight -> 0 (denominator >= 1)
    out = diff.loss(lambda x_t, t: torch.zeros_like(x_t), x0, generator=g)
    assert out["loss"].item() == pytest.approx(x0.square().mean().item(), rel=1e-6)
    w = torch.tensor([0.25, 2.0]).view(2, 1, 1)
    out = diff.loss(lambda x_t, t: torch.zeros_like(x_t), x0, weight=w, generator=g)
    expect = (w * x0.square()).sum() / (15 * 0.25 + 15 * 2.0)
    assert out["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    zero = torch.zeros(2, 5, 1)
    assert diff.loss(pred, x0, weight=zero, generator=g)["loss"].item() == 0.0


def test_loss_determinism(diff: Diffusion) -> None:
    x0 = torch.randn(3, 25, 6)
    a = diff.loss(toy_predict, x0, generator=torch.Generator().manual_seed(5))
    b = diff.loss(toy_predict, x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["t"], b["t"]) and torch.equal(a["loss"], b["loss"])


# ---------------------------------------------------------------- sampler


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [1, 2, 7, 50, 1000])
def test_sampler_perfect_predictor_returns_x0(diff: Diffusion, eta: float, steps: int) -> None:
    x0 = torch.randn(2, 25, 6, generator=torch.Generator().manual_seed(6))
    seen = []

    def pred(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        assert t.shape == (2,) and t.dtype == torch.int64 and x_t.shape == x0.shape
        return x0

    out = diff.sample(
        pred, x0.shape, steps=steps, eta=eta, generator=torch.Generator().manual_seed(7)
    )
    assert torch.equal(out, x0)
    assert seen == diff.timesteps(steps)


@pytest.mark.parametrize("eta,steps", [(0.0, 5), (0.5, 5), (1.0, 3), (1.0, 1)])
def test_sampler_matches_numpy_reference(diff: Diffusion, eta: float, steps: int) -> None:
    shape = (2, 4, 3)
    ref = np_sample(shape, steps, eta, seed=8)
    out64 = diff.sample(
        toy_predict,
        shape,
        steps=steps,
        eta=eta,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(8),
    )
    np.testing.assert_allclose(out64.numpy(), ref, rtol=1e-12, atol=1e-12)
    out32 = diff.sample(
        toy_predict, shape, steps=steps, eta=eta, generator=torch.Generator().manual_seed(8)
    )
    assert out32.dtype == torch.float32
    ref32 = np_sample(shape, steps, eta, seed=8, noise_dtype=torch.float32)
    np.testing.assert_allclose(out32.numpy(), ref32, rtol=1e-5, atol=1e-5)


def test_sampler_pinned_literals(diff: Diffusion) -> None:
    out = diff.sample(
        toy_predict,
        (1, 4),
        steps=5,
        eta=0.5,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    pinned = [0.292829935855, 0.160319013865, -0.036808379418, 0.358819043402]
    np.testing.assert_allclose(out[0].numpy(), pinned, rtol=0, atol=1e-9)


def test_sampler_known_inpainting(diff: Diffusion) -> None:
    g = torch.Generator().manual_seed(9)
    shape = (2, 6, 3)
    values = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = torch.zeros(1, 6, 1, dtype=torch.bool)
    mask[:, :2] = True  # first two frames known, broadcast over N and D
    for eta, steps in ((0.0, 6), (1.0, 4)):
        out = diff.sample(
            toy_predict,
            shape,
            steps=steps,
            eta=eta,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(10),
            known=(values, mask),
        )
        assert torch.equal(out[:, :2], values[:, :2])
        assert not torch.allclose(out[:, 2:], values[:, 2:])
        full_mask = np.broadcast_to(mask.numpy(), shape)
        ref = np_sample(shape, steps, eta, seed=10, known=(values.numpy(), full_mask))
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_sampler_gaussian_data_distribution(diff: Diffusion) -> None:
    # data x0 ~ N(mu, s^2): the exact posterior mean E[x0 | x_t] as predictor; with all 1000
    # steps both DDIM (eta 0) and ancestral (eta 1) must reproduce the data distribution.
    mu, s = 0.7, 0.3

    def posterior_mean(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = diff.alphas_bar[t].to(x.dtype)
        return mu + s * s * ab.sqrt() / (ab * s * s + 1 - ab) * (x - ab.sqrt() * mu)

    for eta in (0.0, 1.0):
        x = diff.sample(
            posterior_mean, (20000,), steps=T, eta=eta, generator=torch.Generator().manual_seed(11)
        )
        assert x.mean().item() == pytest.approx(mu, abs=0.01)
        assert x.std().item() == pytest.approx(s, rel=0.02)


def test_sampler_determinism_and_x_T(diff: Diffusion) -> None:
    def run(seed: int, **kw) -> torch.Tensor:
        return diff.sample(
            toy_predict,
            (2, 25, 6),
            steps=10,
            eta=1.0,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )

    assert torch.equal(run(12), run(12))
    assert not torch.equal(run(12), run(13))
    x_T = torch.randn(2, 25, 6, generator=torch.Generator().manual_seed(14))
    a = diff.sample(toy_predict, (2, 25, 6), steps=10, eta=0.0, x_T=x_T)
    b = diff.sample(toy_predict, (2, 25, 6), steps=10, eta=0.0, x_T=x_T.clone())
    assert torch.equal(a, b)  # eta 0 with a given x_T needs no randomness
    with pytest.raises(ValueError):
        diff.sample(toy_predict, (2, 25, 6), x_T=torch.zeros(2, 25, 5))
