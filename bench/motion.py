"""Benchmark of stage-1 motion training steps (the `paper` MotionDiT preset) on this machine.

In one run it prints, for the Exp transformer (motion_dim 52; the Pose transformer, motion_dim
6, too) at batch 32 and F = 25:

- steps/s of full training steps: `Diffusion.loss` (q_sample + forward), backward, Adam step
- FLOPs of one training step (forward + backward), counted by torch.utils.flop_counter
- this machine's dense float32 matmul throughput, measured in the same run (square matmuls of
  a few sizes, best of several)
- achieved FLOP/s = FLOPs/step x steps/s, and its fraction of the matmul throughput (goal >= 0.3)

Every timing is the best of `--repeat` blocks of `--steps` steps (other jobs on a small shared
machine only ever make a block slower). `--profile` adds the top operators of a few steps.
Usage: .venv/bin/python bench/motion.py [--audio-dim 80|768] [--compile] [--profile]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from fd2talk.model.diffusion import Diffusion, DiffusionConfig
from fd2talk.model.nets.motion_dit import PRESETS, MotionDiT

BATCH = 32
FRAMES = 25  # the training window (paper: sequence length 25)
EXP_DIM = 52  # mediapipe blendshapes (deep3d: 64)
POSE_DIM = 6
MATMUL_SIZES = (1024, 2048, 3072)  # square float32 matmuls that saturate the cores
LR = 1e-4


def matmul_peak(repeat: int) -> tuple[float, int]:
    """Best dense float32 matmul FLOP/s over MATMUL_SIZES: (flop/s, the size that reached it)."""
    best, best_n = 0.0, 0
    for n in MATMUL_SIZES:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)  # warm-up
        for _ in range(repeat):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            rate = 2 * n**3 / (time.perf_counter() - t0)
            if rate > best:
                best, best_n = rate, n
    return best, best_n


def make_step(motion_dim: int, audio_dim: int, compile_model: bool):
    """A closure running one training step of a fresh `paper` MotionDiT on a fixed random batch."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MotionDiT(PRESETS["paper"], motion_dim, audio_dim)
    net = torch.compile(model) if compile_model else model
    diffusion = Diffusion(DiffusionConfig())
    x0 = torch.randn(BATCH, FRAMES, motion_dim, generator=g)  # (N, F, D)
    audio = torch.randn(BATCH, FRAMES, audio_dim, generator=g)  # (N, F, D_a)
    valid = torch.ones(BATCH, FRAMES, 1)  # (N, F, 1) the trainer's valid-frame weight
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)

    def step() -> float:
        out = diffusion.loss(lambda x_t, t: net(x_t, t, audio), x0, weight=valid, generator=g)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out["loss"].item()

    return model, step


def step_flops(step) -> int:
    """FLOPs of one training step as torch's FlopCounterMode counts them (matmuls, attention)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def steps_per_second(step, steps: int, repeat: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - t0) / steps)
    return 1.0 / best


def profile(step, steps: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-dim", type=int, default=80, help="80 log-mel or 768 wav2vec2")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    parser.add_argument("--repeat", type=int, default=6, help="timed blocks; the best counts")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-pose", action="store_true", help="skip the Pose transformer")
    parser.add_argument("--profile", action="store_true", help="print the top operators")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peak, peak_n = matmul_peak(args.repeat + 2)
    print(
        f"threads {torch.get_num_threads()}, torch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.2f} "
        "at start (other jobs on the machine slow every number down)"
    )
    results = []
    nets = [("exp", EXP_DIM)] + ([] if args.no_pose else [("pose", POSE_DIM)])
    for name, dim in nets:
        model, step = make_step(dim, args.audio_dim, args.compile)
        params = sum(p.numel() for p in model.parameters())
        step()  # first call (compilation, allocator warm-up) is not counted anywhere
        flops = step_flops(make_step(dim, args.audio_dim, False)[1])  # eager: the same math
        rate = steps_per_second(step, args.steps, args.repeat, args.warmup)
        results.append((name, dim, params, rate, flops))
        if args.profile:
            profile(step, args.steps)
    # the peak again at the end: a neighbour process can only make a measurement slower
    peak_end, n_end = matmul_peak(args.repeat + 2)
    if peak_end > peak:
        peak, peak_n = peak_end, n_end
    print(
        f"dense fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s (best at {peak_n}x{peak_n}, "
        f"measured before and after the training steps)"
    )
    cfg = PRESETS["paper"]
    attention = 2 * cfg.layers * 3 * 4 * BATCH * FRAMES**2 * cfg.width  # QK^T + PV, fwd + 2x bwd
    print(
        f"(FlopCounterMode counts the matmuls only, not the CPU flash-attention kernel: "
        f"~{attention / 1e9:.2f} GFLOP/step of attention are left out of the numbers below)"
    )
    for name, dim, params, rate, flops in results:
        achieved = flops * rate
        print(
            f"{name:>4} transformer (paper preset, {params / 1e6:.2f} M params, motion_dim "
            f"{dim}, audio_dim {args.audio_dim}, batch {BATCH}, F {FRAMES}"
            f"{', compiled' if args.compile else ''}): {rate:.2f} steps/s "
            f"({1e3 / rate:.0f} ms/step), {flops / 1e9:.2f} GFLOP/step, "
            f"{achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.2f} of the matmul peak"
        )


if __name__ == "__main__":
    main()
