"""Benchmark of generation (model/generation/pipeline.py, `fd2talk-generate`) on this machine, one run:

1. seconds of compute per second of video, split into motion / frames / decode / encode, for
   the tiny preset (the demo's trained model, `--model`) and the paper preset (random weights
   of the paper's sizes: speed only). The paper frame UNet's steps are timed at 1 step and
   scaled to the step count (every step is one forward of the same cost);
2. the frame stage's speed-ups on the tiny model: batched (25 frames) versus a per-frame loop,
   the reference's φ2 keys/values computed once versus at every step, DPM-Solver++ at 10 and 20
   steps versus 50-step DDIM; all together against 50-step per-frame DDIM without the cache
   (the goal: >= 10x); the paper preset's batch and cache gains at 1 step, 16x16;
3. the few-step solvers' quality cost: PSNR of their frames against the 50-step DDIM frames
   (same seed, same motion) on the held-out demo clips, and against the true frames (LPIPS
   too when $FD2TALK_VGG16 names the VGG16 weights);
4. flicker: frames are denoised independently; with start noise independent per frame versus
   shared by all frames, the temporal roughness (mean |f[t+1] - 2 f[t] + f[t-1]|, 0-255 levels)
   of the generated clip next to the true clip's, and PSNR against the true frames;
5. peak memory (resident set, sampled every 50 ms while generating) of 60 s and 5 min of
   speech with the tiny model (1 step: the memory does not depend on the steps), each in a
   fresh process.

Usage: .venv/bin/python bench/generate.py [--model work/model] [--work work/demo]
(`bash install.sh` makes both). About 10 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def best(fn, repeat: int = 2) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def paper_models():
    """Motion and frame models of the paper's sizes with random weights (speed only)."""
    from fd2talk.model.configs import MOTION_PRESETS, UNET_PRESETS
    from fd2talk.model.data.loader import DatasetInfo
    from fd2talk.model.data.normalize import Stats
    from fd2talk.model.diffusion import Diffusion, DiffusionConfig
    from fd2talk.model.generation.frames import FrameModel
    from fd2talk.model.generation.motion import MotionModel
    from fd2talk.model.nets.autoencoder import PRESETS as AE
    from fd2talk.model.nets.autoencoder import RefAutoencoder
    from fd2talk.model.nets.frame_unet import FrameUNet
    from fd2talk.model.nets.motion_dit import MotionDiT

    torch.manual_seed(0)
    dims = {"exp": 52, "pose": 6, "audio": 80}
    stats = Stats(
        {k: np.zeros(v, np.float32) for k, v in dims.items()},
        {k: np.ones(v, np.float32) for k, v in dims.items()},
        1,
    )
    nets = {
        k: MotionDiT(MOTION_PRESETS["paper"], dims[k], dims["audio"]).eval()
        for k in ("exp", "pose")
    }
    motion = MotionModel(
        nets,
        stats,
        Diffusion(DiffusionConfig()),
        DatasetInfo("mediapipe", 52, "logmel", 80),
        {},
        "cpu",
        0,
    )
    unet = FrameUNet(UNET_PRESETS["paper"], 58).eval()
    with torch.no_grad():
        for p in unet.parameters():
            if p.dim() > 1 and not p.abs().sum():
                torch.nn.init.normal_(p, std=0.02)  # zero-initialised outputs: real compute
    frames = FrameModel(
        unet,
        RefAutoencoder.build(AE["paper"]).eval(),
        stats,
        Diffusion(DiffusionConfig()),
        "cpu",
        0,
        1.0,
        256,
    )
    return motion, frames


def stage_costs(
    name: str, motion, frames, frame_steps: int, scale_steps: int, seconds: float = 4.0
) -> dict:
    """Seconds of compute per second of video per stage."""
    from fd2talk.core.media import VideoWriter
    from fd2talk.model.generation.frames import iter_frames
    from fd2talk.model.generation.motion import sample

    n = int(seconds * 25)
    feats = np.random.default_rng(0).standard_normal((n, motion.info.audio_dim)).astype(np.float32)
    m_steps = motion.diffusion.config.sample_steps
    t_motion = best(lambda: sample(motion, feats, steps=m_steps), 1)
    s = frames.image_size
    ref = torch.zeros(3, s, s)
    exp = np.zeros((25, motion.info.exp_dim), np.float32)
    pose = np.zeros((25, 6), np.float32)
    t_batch = best(
        lambda: list(
            iter_frames(
                frames, ref, exp, pose, steps=frame_steps, calibrate=False, ref_pose=pose[0]
            )
        ),
        1,
    )
    with torch.no_grad():
        lat = frames.ae.encode(ref[None]).expand(25, -1, -1, -1)
        t_decode = best(lambda: frames.ae.decode(lat, lat), 1)
    per_step = (t_batch - t_decode) / frame_steps
    t_frames = per_step * scale_steps
    video = np.random.default_rng(0).integers(0, 255, (n, 256, 256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "a.wav"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency=200:duration={seconds}",
                "-ar",
                "16000",
                str(wav),
            ],
            check=True,
        )

        def encode():
            with VideoWriter(Path(d) / "v.mp4", 256, 256, wav) as w:
                for a in range(0, n, 25):
                    w.write(video[a : a + 25])
                w.close()

        t_encode = best(encode, 1)
    per_s = {
        "motion": t_motion / seconds,
        "frames": t_frames * n / 25 / seconds,
        "decode": t_decode * n / 25 / seconds,
        "encode": t_encode / seconds,
    }
    total = sum(per_s.values())
    print(
        f"  {name:6s} ({scale_steps} steps, {s} px): "
        + ", ".join(f"{k} {v:.2f}" for k, v in per_s.items())
        + f" | total {total:.2f} s per s of video"
    )
    return per_s


def speedups(
    frames,
    exp: np.ndarray,
    pose: np.ndarray,
    ref: torch.Tensor,
    label: str,
    steps: int = 50,
    n: int = 25,
) -> None:
    from fd2talk.model.generation.frames import iter_frames

    exp, pose = exp[:n], pose[:n]

    def run(chunk: int, cache: bool, solver: str = "ddim", k: int = steps) -> float:
        return best(
            lambda: list(
                iter_frames(
                    frames,
                    ref,
                    exp,
                    pose,
                    steps=k,
                    chunk=chunk,
                    solver=solver,
                    cache=cache,
                    calibrate=False,
                    ref_pose=pose[0],
                )
            ),
            1,
        )

    base = run(1, False)
    rows = {
        "per-frame, no cache (baseline)": base,
        "batched 25, no cache": run(n, False),
        "batched 25, cache": run(n, True),
    }
    for k in (20, 10) if steps == 50 else ():  # the few-step solver against 50 DDIM steps
        rows[f"batched, cache, dpm++ {k} steps"] = run(n, True, "dpm++", k)
    print(f"  {label}: {n} frames, {steps}-step DDIM per-frame baseline {base:.2f} s")
    for k, v in rows.items():
        print(f"    {k:34s} {v:7.2f} s  {base / v:5.1f}x")


def quality(pipe, clips: list[dict], steps_list=(10, 20)) -> None:
    """dpm++ and ddim at few steps against 50-step ddim (same seed, true motion)."""
    from fd2talk.model.demo.check import pooled_psnr as psnr
    from fd2talk.model.generation.options import Options

    perceptual = None
    if os.environ.get("FD2TALK_VGG16"):
        from fd2talk.model.nets.perceptual import Perceptual

        perceptual = Perceptual(os.environ["FD2TALK_VGG16"]).eval()
    results = {}
    for c in clips:

        def gen(solver: str, k: int, c=c):
            return pipe(
                c["ref"],
                c["src"],
                options=Options(steps=k, solver=solver, crop=False),
                keep_frames=True,
                motion=c["motion"],
            ).video

        ref50 = gen("ddim", 50)
        for solver in ("ddim", "dpm++"):
            for k in steps_list:
                v = gen(solver, k)
                row = results.setdefault((solver, k), {"vs50": [], "vsgt": [], "lpips": []})
                row["vs50"].append(psnr(v, ref50))
                row["vsgt"].append(psnr(v, c["gt"][: len(v)]))
                if perceptual is not None:
                    with torch.no_grad():
                        a = torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1
                        b = torch.from_numpy(ref50).permute(0, 3, 1, 2).float() / 127.5 - 1
                        row["lpips"].append(float(perceptual(a, b).mean()))
        results.setdefault(("ddim", 50), {"vs50": [], "vsgt": [], "lpips": []})["vsgt"].append(
            psnr(ref50, c["gt"][: len(ref50)])
        )
    print("  PSNR (dB) per held-out clip; vs50: against 50-step DDIM, vsgt: against the truth")
    for (solver, k), row in sorted(results.items()):
        lp = f", LPIPS vs50 {np.mean(row['lpips']):.4f}" if row["lpips"] else ""
        vs50 = (" vs50 " + "/".join(f"{x:.1f}" for x in row["vs50"])) if row["vs50"] else ""
        print(
            f"    {solver:5s} {k:2d} steps:{vs50} vsgt "
            + "/".join(f"{x:.1f}" for x in row["vsgt"])
            + lp
        )
    if perceptual is None:
        print("    (LPIPS: set FD2TALK_VGG16=vgg16-397923af.pth to add it)")


def roughness(v: np.ndarray) -> float:
    """Mean |f[t+1] - 2 f[t] + f[t-1]| in 0-255 levels: flicker (motion is smooth)."""
    v = v.astype(np.float32)
    return float(np.abs(v[2:] - 2 * v[1:-1] + v[:-2]).mean())


def flicker(pipe, clips: list[dict]) -> None:
    from fd2talk.model.demo.check import pooled_psnr as psnr
    from fd2talk.model.generation.options import Options

    for c in clips:
        parts = [f"truth {roughness(c['gt']):.2f}"]
        for noise in ("independent", "shared"):
            v = pipe(
                c["ref"],
                c["src"],
                options=Options(noise=noise, crop=False),
                keep_frames=True,
                motion=c["motion"],
            ).video
            parts.append(f"{noise} {roughness(v):.2f} (PSNR {psnr(v, c['gt'][: len(v)]):.1f} dB)")
        print(f"    {c['key']}: roughness " + ", ".join(parts))


MEMORY_SCRIPT = """
import sys, threading, time
from fd2talk.model.generation.options import Options
from fd2talk.model.generation.pipeline import FD2TalkPipeline

def rss():  # resident set size now, MB
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

pipe = FD2TalkPipeline.from_pretrained(sys.argv[1], device="cpu")
before, peak, done = rss(), [0.0], threading.Event()

def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.05)

t = threading.Thread(target=watch)
t.start()
r = pipe(sys.argv[2], sys.argv[3], out=sys.argv[4], options=Options(steps=1, solver="dpm++"))
done.set()
t.join()
print(before, peak[0], r.frames)
"""


def memory(model: str, portrait: Path, speech: Path, d: Path) -> None:
    for seconds in (60, 300):
        long = d / f"speech{seconds}.wav"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-stream_loop",
                "-1",
                "-i",
                str(speech),
                "-t",
                str(seconds),
                "-ar",
                "16000",
                "-ac",
                "1",
                str(long),
            ],
            check=True,
        )
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                MEMORY_SCRIPT,
                model,
                str(portrait),
                str(long),
                str(d / "long.mp4"),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        before, peak, n = out.stdout.split()[-3:]
        print(
            f"    {seconds:3d} s of speech ({n} frames): RSS {float(before):.0f} MB after "
            f"loading, peak {float(peak):.0f} MB while generating (sampled every 50 ms)"
        )


def held_out(work: Path, size: int) -> list[dict]:
    import cv2

    from fd2talk.core import media
    from fd2talk.model.data import loader as data

    out = []
    d = Path(tempfile.mkdtemp())
    for c in data.iter_clips(work / "shards", "test", ("exp", "pose", "valid", "mp4")):
        if c["meta"].get("audio") is False:  # video-only: no speech to generate from
            continue
        src = d / f"{c['key']}.mp4"
        src.write_bytes(c["mp4"])
        frames = media.read_frames(src, 256, 256, 600.0)
        first = int(np.flatnonzero(c["valid"])[0])
        gt = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
        out.append(
            dict(
                key=c["key"][:7],
                src=src,
                ref=frames[first],
                gt=gt,
                motion={"exp": c["exp"], "pose": c["pose"]},
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "work" / "model"))
    ap.add_argument("--work", default=str(REPO / "work" / "demo"))
    ap.add_argument(
        "--sections",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5],
        help="which of the numbered sections to run",
    )
    args = ap.parse_args()
    run = set(args.sections)
    torch.set_num_threads(os.cpu_count() or 1)
    from fd2talk.model.generation.pipeline import FD2TalkPipeline

    print(f"load average at start: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    pipe = FD2TalkPipeline.from_pretrained(args.model, device="cpu")
    clips = held_out(Path(args.work), pipe.image_size)
    motion_p, frames_p = paper_models()
    if 1 in run:
        print("1. seconds of compute per second of video (25 frames a batch, reference cached)")
        stage_costs("tiny", pipe.motion_model, pipe.frame_model, 50, 50)
        stage_costs("paper", motion_p, frames_p, 1, 50, seconds=2.0)
    c = clips[0]
    if 2 in run:
        print("2. frame-stage speed-ups")
        s = pipe.image_size
        ref = torch.from_numpy(np.ascontiguousarray(c["gt"][0])).permute(2, 0, 1).float()
        speedups(
            pipe.frame_model,
            c["motion"]["exp"],
            c["motion"]["pose"],
            ref / 127.5 - 1,
            f"tiny, {s} px, trained demo model",
        )
        frames_p.image_size = 64
        speedups(
            frames_p,
            np.zeros((25, 52), np.float32),
            np.zeros((25, 6), np.float32),
            torch.zeros(3, 64, 64),
            "paper preset, 64 px (16x16 latents), 1 step",
            steps=1,
        )
    if 3 in run:
        print("3. few-step solvers against 50-step DDIM (held-out demo clips, true motion)")
        quality(pipe, clips)
    if 4 in run:
        print("4. flicker: start noise independent per frame vs shared (true motion)")
        flicker(pipe, clips)
    if 5 in run:
        print("5. peak memory, tiny model, 1 dpm++ step")
        import cv2

        with tempfile.TemporaryDirectory() as d:
            portrait = Path(d) / "p.png"
            cv2.imwrite(str(portrait), cv2.cvtColor(c["ref"], cv2.COLOR_RGB2BGR))
            memory(args.model, portrait, c["src"], Path(d))


if __name__ == "__main__":
    main()
