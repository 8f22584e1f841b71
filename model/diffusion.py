"""Gaussian diffusion for both FD2Talk stages: schedule, x0-prediction loss, eq. 5 sampler.

Paper sections 3.1 and 3.4.1 (DESIGN.md section 1): T = 1000 training steps with a linear beta
schedule, the network predicts the clean signal x0 (paper eq. 3 / 8 / 9 loss
||x0 - theta(x_t, t, c)||^2), and sampling takes 50 steps of paper eq. 5 (DDIM with sigma_t):

    x_{t-1} = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma_t^2) / sqrt(1 - ab_t)
              * (x_t - sqrt(ab_t) x0_hat) + sigma_t eps,
    sigma_t = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev).

"The network predicts, the diffusion steps": `predict(x_t, t) -> x0_hat` is any callable (the
network with its condition bound); this module never sees the condition.

Code name -> paper symbol:

    | code                  | paper                         | meaning                            |
    |-----------------------|-------------------------------|------------------------------------|
    | `T` (config.steps)    | T = 1000                      | training diffusion steps           |
    | `betas[t]`            | beta_t                        | noise variance added at step t     |
    | `alphas[t]`           | alpha_t = 1 - beta_t          |                                    |
    | `alphas_bar[t]`       | alpha-bar_t = prod alpha_s    | signal fraction at step t          |
    | `x0`, `x0_hat`        | x_0 (beta_0, p_0, J_0), x~_0  | clean signal, network estimate     |
    | `x_t`                 | x_t (beta_t, p_t, J_t)        | noisy signal                       |
    | `noise`, `eps`        | epsilon ~ N(0, I)             |                                    |
    | `ab_prev`             | alpha-bar_{t-1}               | alpha-bar at the NEXT visited index |
    | `sigma`               | sigma_t                       | eq. 5 step noise scale             |
    | `eta`                 | (DDIM eta)                    | 0 = deterministic DDIM, 1 = DDPM   |
    | `sample_steps`        | 50 inference steps            | sampler steps (strided over T)     |

Indexing: t is 0-based, t in [0, T); alphas_bar[0] = 1 - beta_start (already slightly noisy),
alphas_bar[T-1] ~ 4e-5. When the sampler skips steps, "t-1" in eq. 5 means the next index the
sampler visits; after the last visited index (0) ab_prev = 1, so sigma = 0 and the returned x0
is exactly the last x0_hat.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fd2talk.model.solvers import Solver

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (N,...), t (N,)) -> x0_hat


@dataclass(frozen=True)
class DiffusionConfig:
    steps: int = 1000  # T, training steps (paper)
    beta_start: float = 1e-4  # linear schedule (DDPM)
    beta_end: float = 0.02
    sample_steps: int = 50  # paper: 50 inference steps
    eta: float = 0.0  # 0 = DDIM, 1 = ancestral

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if not 1 <= self.sample_steps <= self.steps:
            raise ValueError(f"sample_steps must be in [1, {self.steps}], got {self.sample_steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")


def _start(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str,
    x_T: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """A sampler's x_T: the given start noise (checked against `shape`) or a fresh draw."""
    if x_T is None:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
    return x_T.to(device, dtype)  # eq. 5 (DDIM when eta = 0) and DPM-Solver++


class Diffusion:
    """Linear-beta Gaussian diffusion with x0 prediction and the eq. 5 (DDIM/sigma) sampler."""

    def __init__(self, config: DiffusionConfig = DiffusionConfig()) -> None:
        self.config = config
        self.T = config.steps
        self.betas = torch.linspace(
            config.beta_start, config.beta_end, self.T, dtype=torch.float64
        )  # (T,)
        self.alphas = 1.0 - self.betas  # (T,)
        self.alphas_bar = torch.cumprod(self.alphas, dim=0)  # (T,) float64, decreasing
        self._coef_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def _coefs(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """(sqrt(ab), sqrt(1-ab)) as (T,) tensors on device/dtype, computed in float64 once."""
        key = (torch.device(device), dtype)
        if key not in self._coef_cache:
            ab = self.alphas_bar
            self._coef_cache[key] = (ab.sqrt().to(device, dtype), (1 - ab).sqrt().to(device, dtype))
        return self._coef_cache[key]

    def sample_t(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """(n,) int64 training steps uniform in [0, T). The generator must live on `device`."""
        return torch.randint(0, self.T, (n,), generator=generator, device=device, dtype=torch.int64)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process (DDPM eq. 4): x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise.

        x0, noise: (N, ...); t: (N,) int64, broadcast over x0's other dims. Returns x0's dtype.
        """
        sqrt_ab, sqrt_1mab = self._coefs(x0.device, x0.dtype)
        view = (-1,) + (1,) * (x0.dim() - 1)
        t = t.to(x0.device)
        return sqrt_ab[t].view(view) * x0 + sqrt_1mab[t].view(view) * noise.to(x0.dtype)

    def loss(
        self,
        predict: Predict,
        x0: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """x0-prediction loss (paper eq. 3/8/9), a dict of terms.

        x0: (N, ...). t: (N,) int64 (drawn uniform if None, first), noise like x0 (drawn N(0, I)
        if None, second), both from `generator`. weight: broadcastable to x0 (e.g. (N, F, 1)
        valid mask): loss = sum(w (x0 - x0_hat)^2) / max(sum(w broadcast to x0), 1); without a
        weight it is the plain mean. Returns {"loss" (), "x0_hat", "t", "x_t", "noise"}.
        """
        if t is None:
            t = self.sample_t(x0.shape[0], generator=generator, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.q_sample(x0, t, noise)  # (N, ...)
        x0_hat = predict(x_t, t)  # (N, ...)
        se = (x0 - x0_hat).square()  # (N, ...)
        if weight is None:
            loss = se.mean()
        else:
            w = weight.to(se.dtype).expand_as(se)  # (N, ...)
            loss = (w * se).sum() / w.sum().clamp(min=1.0)
        return {"loss": loss, "x0_hat": x0_hat, "t": t, "x_t": x_t, "noise": noise}

    def timesteps(self, n: int | None = None) -> list[int]:
        """The n indices the sampler visits, descending, evenly spaced over [0, T-1].

        Rule: t_i = round((T - 1) * (n - 1 - i) / (n - 1)) for i = 0..n-1, rounding halves up
        (exact integer arithmetic), so t_0 = T - 1, t_{n-1} = 0 and all are distinct
        (n <= T). n = 1 gives [T - 1]. n defaults to config.sample_steps.
        E.g. T=1000, n=50: [999, 979, 958, 938, ..., 41, 20, 0].
        """
        n = self.config.sample_steps if n is None else n
        if not 1 <= n <= self.T:
            raise ValueError(f"number of sampling steps must be in [1, {self.T}], got {n}")
        if n == 1:
            return [self.T - 1]
        d = n - 1
        return [((self.T - 1) * (d - i) * 2 + d) // (2 * d) for i in range(n)]

    def step_coefs(self, t: int, t_prev: int, eta: float) -> tuple[float, float, float, float]:
        """Eq. 5 scalars (float64) for one step t -> t_prev (t_prev = -1: ab_prev = 1).

        Returns (c_x0, c_dir, sigma, sqrt_ab_t) with
        x_prev = c_x0 x0_hat + c_dir (x_t - sqrt_ab_t x0_hat) + sigma eps.
        """
        ab_t = float(self.alphas_bar[t])
        ab_prev = float(self.alphas_bar[t_prev]) if t_prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
        c_dir = math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) / math.sqrt(1 - ab_t)
        return math.sqrt(ab_prev), c_dir, sigma, math.sqrt(ab_t)

    @torch.no_grad()
    def sample(
        self,
        predict: Predict,
        shape: tuple[int, ...],
        steps: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        x_T: torch.Tensor | None = None,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
        progress: bool = False,
        dtype: torch.dtype = torch.float32,
        solver: Solver = Solver.ddim,
    ) -> torch.Tensor:
        """Draw x0 of `shape` (N, ...) by `steps` eq. 5 updates over `timesteps(steps)`.

        steps / eta default to the config. x_T: start noise of `shape` (else drawn N(0, I)).
        known = (values, mask): values of `shape`, mask bool broadcastable to it; at each step
        x0_hat is replaced by values where mask before the update, and x_{t-1} by
        q_sample(values, t_prev, fresh eps) where mask; the result equals values where mask.
        Noise order from `generator` (on `device`): x_T (if not given), then per step the eq. 5
        eps (only when sigma_t > 0), then the known eps (only when known and t_prev >= 0).
        predict is called with t as an (N,) int64 tensor filled with the current index.
        solver="dpm++": DPM-Solver++ (2nd order, multistep; `sample_dpm`) instead of eq. 5.
        """
        if solver not in set(Solver):
            raise ValueError(f"solver must be one of {', '.join(Solver)}, not {solver!r}")
        if solver == Solver.dpm:
            if known is not None:
                raise ValueError("the dpm++ solver does not inpaint (known=): use ddim")
            return self.sample_dpm(predict, shape, steps, generator, device, x_T, dtype)
        eta = self.config.eta if eta is None else eta
        ts = self.timesteps(steps)
        x = _start(shape, generator, device, x_T, dtype)
        if known is not None:
            values = known[0].to(device, dtype)  # shape
            mask = known[1].to(device, torch.bool)  # broadcastable to shape
        it = ts
        if progress:
            from tqdm import tqdm

            it = tqdm(ts, desc="sampling", leave=False)
        for i, t in enumerate(it):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            t_vec = torch.full((shape[0],), t, device=device, dtype=torch.int64)  # (N,)
            x0_hat = predict(x, t_vec).to(dtype)  # shape
            if known is not None:
                x0_hat = torch.where(mask, values, x0_hat)
            c_x0, c_dir, sigma, sqrt_ab_t = self.step_coefs(t, t_prev, eta)
            x = c_x0 * x0_hat + c_dir * (x - sqrt_ab_t * x0_hat)  # eq. 5 without noise
            if sigma > 0:
                x = x + sigma * torch.randn(shape, generator=generator, device=device, dtype=dtype)
            if known is not None and t_prev >= 0:
                eps = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                t_prev_vec = torch.full((shape[0],), t_prev, device=device, dtype=torch.int64)
                x = torch.where(mask, self.q_sample(values, t_prev_vec, eps), x)
        return x

    @torch.no_grad()
    def sample_dpm(
        self,
        predict: Predict,
        shape: tuple[int, ...],
        steps: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        x_T: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """x0 of `shape` by DPM-Solver++ (Lu et al. 2022; diffusers' DPMSolverMultistepScheduler,
        2nd order, x0 prediction, this schedule's betas), a few-step alternative to eq. 5: at
        10-20 steps it lands close to 50 DDIM steps (bench/generate.py measures how close).
        Deterministic given x_T (drawn first from `generator` when not given)."""
        from diffusers import DPMSolverMultistepScheduler

        n = self.config.sample_steps if steps is None else steps
        if not 1 <= n <= self.T:
            raise ValueError(f"number of sampling steps must be in [1, {self.T}], got {n}")
        with warnings.catch_warnings():  # diffusers' own numpy-2 copy= deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            sched = DPMSolverMultistepScheduler(
                num_train_timesteps=self.T,
                trained_betas=self.betas.numpy(),
                solver_order=2,
                prediction_type="sample",
                algorithm_type="dpmsolver++",
                lower_order_final=True,
            )
            sched.set_timesteps(n, device=device)
        x = _start(shape, generator, device, x_T, dtype)
        for t in sched.timesteps:
            t_vec = torch.full((shape[0],), int(t), device=device, dtype=torch.int64)  # (N,)
            x0_hat = predict(x, t_vec).to(dtype)
            x = sched.step(x0_hat, t, x).prev_sample.to(dtype)
        return x
