"""Benchmark of the stage-2 frame UNet (model/nets/frame_unet.py) on this machine.

In one run it prints, for the `tiny` and `paper` FrameUNet presets:

- training steps/s (`Diffusion.loss` + backward + Adam step) and samples/s. tiny: batch 32 at
  32x32 latents. paper: 64x64 latents (the paper's size) but batch `--paper-batch` (2), since
  the paper's batch 32 takes about a minute a step on a 2-core CPU; its batch-32 step time is
  extrapolated linearly from the per-sample time (compute-bound, so a fair estimate on CPU)
- FLOPs of one forward per sample: torch's FlopCounterMode (convolutions, linears) plus the
  attention products QKᵀ and PV counted from the shapes (the CPU SDPA kernel is not counted by
  FlopCounterMode), and the achieved fraction of a dense float32 matmul measured in the run
- sampling seconds per frame with the eq. 5 sampler (`Diffusion.sample`): tiny runs the full 50
  steps; paper runs `--paper-sample-steps` (2) steps at 64x64 and scales to 50 (every step is
  one forward of the same cost, so the scaling is linear)
- the speed-up of sampling a 25-frame window as one batch (one shared reference) over a loop of
  single frames, with `--window-steps` (5) sampler steps (the ratio does not depend on the step
  count): tiny at 32x32, paper at 16x16 with 1 step (its 64x64 window takes many minutes
  here). The whole run: ~4 min estimated on an idle 2-core CPU; >15 min under load 5

Every timing is the best of `--repeat` blocks (a neighbour process only ever makes a block
slower); the load average at the start is printed. Usage: .venv/bin/python bench/frames.py
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from fd2talk.model.diffusion import Diffusion, DiffusionConfig
from fd2talk.model.nets.frame_unet import PRESETS, DualCrossAttention, FrameUNet

MOTION_DIM = 58  # 52 mediapipe blendshapes + 6 pose (deep3d: 70)
D = 3  # VQ-f4 latent channels
WINDOW = 25  # frames sampled together at inference (one stage-1 window)
SAMPLE_STEPS = 50  # paper: 50 inference steps
LR = 1e-4
MATMUL_N = 2048  # square float32 matmul for the machine's dense throughput


def make_model(preset: str) -> FrameUNet:
    """A fresh preset model whose zero-initialised outputs are randomised (realistic compute)."""
    torch.manual_seed(0)
    model = FrameUNet(PRESETS[preset], MOTION_DIM)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "to_out" in name or "conv_out" in name:
                p.normal_(std=0.02)
    return model


def batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    j0 = torch.randn(n, D, size, size, generator=g)  # (N, d, h, w)
    motion = torch.randn(n, MOTION_DIM, generator=g)  # (N, D_m)
    ref = torch.randn(n, D, size, size, generator=g)  # (N, d, h, w)
    return j0, motion, ref


def best_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Best wall time of one call over `repeat` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def forward_flops(model: FrameUNet, size: int) -> tuple[int, int]:
    """(FlopCounterMode FLOPs, attention-product FLOPs) of one forward of ONE sample.

    Attention products per DualCrossAttention: 4 · H·W · C · (M + S) (QKᵀ and PV over the
    motion tokens M and reference tokens S; the same total for dual and concat).
    """
    attn = [0]

    def hook(_module, args, _out) -> None:
        f, m, r = args[:3]  # (N, C, H, W), (N, M, D_c), (N, S, D_c)
        n, c, h, w = f.shape
        attn[0] += 4 * n * h * w * c * (m.shape[1] + r.shape[1])

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, DualCrossAttention)
    ]
    j0, motion, ref = batch(1, size)
    t = torch.zeros(1, dtype=torch.int64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(j0, t, motion, ref)
    for h in handles:
        h.remove()
    return counter.get_total_flops(), attn[0]


def train_seconds(model: FrameUNet, n: int, size: int, repeat: int) -> float:
    """Best seconds of one training step (loss + backward + Adam) at batch n."""
    diffusion = Diffusion(DiffusionConfig())
    g = torch.Generator().manual_seed(1)
    j0, motion, ref = batch(n, size)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()

    def step() -> None:
        loss = diffusion.loss(model.predictor(motion, ref), j0, generator=g)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return best_seconds(step, repeat)


def sample_seconds(
    model: FrameUNet, frames: int, size: int, steps: int, repeat: int, loop: bool
) -> float:
    """Best seconds to sample `frames` latents with `steps` eq. 5 steps: one batch sharing a
    batch-1 reference, or (loop) one frame at a time."""
    diffusion = Diffusion(DiffusionConfig())
    _, motion, ref = batch(frames, size)
    ref = ref[:1]  # (1, d, h, w): the window's one reference
    model.eval()

    def run() -> None:
        g = torch.Generator().manual_seed(2)
        if loop:
            for i in range(frames):
                diffusion.sample(
                    model.predictor(motion[i : i + 1], ref),
                    (1, D, size, size),
                    steps=steps,
                    generator=g,
                )
        else:
            diffusion.sample(
                model.predictor(motion, ref), (frames, D, size, size), steps=steps, generator=g
            )

    return best_seconds(run, repeat, warmup=0 if loop else 1)


def matmul_peak(repeat: int) -> float:
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    return 2 * MATMUL_N**3 / best_seconds(lambda: a @ b, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed blocks; the best counts")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--paper-sample-steps", type=int, default=2)
    parser.add_argument("--window-steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    print(
        f"threads {torch.get_num_threads()}, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.2f} at start (other jobs on the machine slow every number down)"
    )
    peak = matmul_peak(args.repeat + 2)
    print(f"dense fp32 matmul ({MATMUL_N}^2): {peak / 1e9:.1f} GFLOP/s")

    runs = {"tiny": (32, 32, 32), "paper": (64, args.paper_batch, 16)}  # size, batch, window size
    for preset, (size, n, win_size) in runs.items():
        model = make_model(preset)
        params = sum(p.numel() for p in model.parameters())
        counted, attn = forward_flops(model, size)
        fwd = counted + attn
        print(
            f"\n{preset} FrameUNet: {params / 1e6:.2f} M params; forward at {size}x{size}: "
            f"{fwd / 1e9:.2f} GFLOP/sample ({attn / 1e9:.2f} of it attention QK/PV)"
        )

        sec = train_seconds(model, n, size, args.repeat)
        achieved = 3 * fwd * n / sec  # training ~ 3 forwards
        print(
            f"  train (batch {n}, {size}x{size}): {1 / sec:.2f} steps/s ({sec * 1e3:.0f} ms/step), "
            f"{n / sec:.2f} samples/s, ~{achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.2f} "
            "of the matmul rate"
        )
        if n != 32:
            print(f"  -> batch 32 (paper) extrapolated: {32 * sec / n:.1f} s/step on this CPU")

        steps = SAMPLE_STEPS if preset == "tiny" else args.paper_sample_steps
        sec = sample_seconds(
            model, 1, size, steps, 1 if preset == "paper" else args.repeat, loop=False
        )
        per_frame = sec * SAMPLE_STEPS / steps
        how = "measured" if steps == SAMPLE_STEPS else f"{steps} steps measured, scaled to 50"
        print(f"  sampling one frame at {size}x{size}, 50 steps: {per_frame:.2f} s/frame ({how})")

        ws = args.window_steps if preset == "tiny" else 1
        batched = sample_seconds(model, WINDOW, win_size, ws, 1, loop=False)
        looped = sample_seconds(model, WINDOW, win_size, ws, 1, loop=True)
        print(
            f"  25-frame window at {win_size}x{win_size}, {ws} steps: batched {batched:.2f} s, "
            f"per-frame loop {looped:.2f} s: speed-up x{looped / batched:.2f} "
            f"(batched: {batched / WINDOW / ws * SAMPLE_STEPS:.2f} s/frame at 50 steps)"
        )
    print(
        f"\nbench wall time {time.perf_counter() - t_start:.0f} s, load average "
        f"{os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
