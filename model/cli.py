"""`fd2talk-train` and `fd2talk-generate`: the model commands (thin: build a config, call one
function).

    fd2talk-train lipsync  --shards WORK/shards --out runs/lipsync       # the lip expert (first)
    fd2talk-train motion   --shards WORK/shards --out runs/motion --lip-expert runs/lipsync/checkpoint.pt

Every run directory holds config.json (settings + git revision), checkpoint.pt (everything a
resume needs) and metrics.jsonl; `--resume` continues a run bit-for-bit; under
`torchrun --nproc_per_node N` the same command trains with DDP.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .device import DeviceName
from .errors import UserError

app = typer.Typer(help=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


class Preset(StrEnum):  # the keys of the PRESETS dicts (tests check they agree)
    tiny = "tiny"
    paper = "paper"


Shards = Annotated[Path, typer.Option("--shards", help="The shard folder `fd2talk-prep` wrote "
                                      "(holds manifest.jsonl and <split>-NNNNNN.tar).")]
Out = Annotated[Path, typer.Option("--out", help="Run directory (checkpoint.pt, metrics.jsonl, "
                                   "config.json).")]
PresetOpt = Annotated[Preset, typer.Option("--preset", help="Model size: tiny (CPU smoke runs, "
                                           "tests) or paper (the published settings).")]
Steps = Annotated[int, typer.Option("--steps", help="Total optimizer steps (a resumed run "
                                    "continues to this number).")]
Batch = Annotated[int, typer.Option("--batch-size", help="25-frame windows per step (per GPU).")]
Lr = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
ValSplit = Annotated[str, typer.Option("--val-split", help="Split for validation; `none` to "
                                       "train without validation.")]
Every = Annotated[int, typer.Option(help="Steps between these events.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for init, data order and noise.")]
Device = Annotated[DeviceName, typer.Option("--device", help="auto (CUDA when present), cpu "
                                            "or cuda.")]
Workers = Annotated[int, typer.Option("--workers", "-j", help="DataLoader worker processes.")]
EpochBatches = Annotated[int, typer.Option("--epoch-batches", help="Batches per data epoch (a "
                                           "re-seed point of the resampled shard stream).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its "
                                      "checkpoint (same settings; bit-for-bit on CPU).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]


def _split(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _summary(title: str, out: Path) -> None:
    """Validation metrics at the first and the last evaluation of the run (metrics.jsonl)."""
    import json

    from rich.console import Console
    from rich.table import Table

    log = out / "metrics.jsonl"
    val = [r for r in map(json.loads, log.read_text().splitlines()) if r["split"] == "val"]
    console = Console(stderr=True)
    if val:
        first, last = val[0], val[-1]
        table = Table(title=title)
        table.add_column("validation")
        table.add_column(f"step {first['step']}", justify="right")
        table.add_column(f"step {last['step']}", justify="right")
        for k in (k for k in last if k not in ("step", "split")):
            table.add_row(k, *(f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k))
                               for r in (first, last)))
        console.print(table)
    console.print(f"checkpoint: {out / 'checkpoint.pt'}\nmetrics:    {log}")


@app.command()
def lipsync(shards: Shards, out: Out, preset: PresetOpt = Preset.tiny, steps: Steps = 2000,
            batch_size: Batch = 32, lr: Lr = 3e-4,
            bfm: Annotated[str | None, typer.Option(
                "--bfm", help="BFM_model_front.mat (or its folder) for deep3d shards (default "
                "$FD2TALK_BFM_DIR); "
                "mediapipe shards fit their mouth model from the data.")] = None,
            val_split: ValSplit = "val", val_every: Every = 250, save_every: Every = 500,
            log_every: Every = 10, seed: Seed = 0, device: Device = DeviceName.auto,
            workers: Workers = 0, epoch_batches: EpochBatches = 500, resume: Resume = False,
            quiet: Quiet = False) -> None:
    """Pre-train the lip expert (SyncNet-style: in-sync vs time-shifted pairs); reports
    in-sync / off-sync accuracy on the validation split."""
    from .train_lipsync import LipsyncTrainConfig, train_lipsync

    cfg = LipsyncTrainConfig(
        shards=str(shards.resolve()), out=str(out.resolve()), preset=preset.value, steps=steps,
        batch_size=batch_size, lr=lr, bfm=bfm, val_split=_split(val_split), val_every=val_every,
        save_every=save_every, log_every=log_every, seed=seed, device=device.value,
        workers=workers, epoch_batches=epoch_batches)
    train_lipsync(cfg, resume=resume, progress=not quiet)
    if not quiet:
        _summary("lip expert (in-sync vs shifted audio)", out)


@app.command()
def motion(shards: Shards, out: Out, preset: PresetOpt = Preset.tiny, steps: Steps = 2000,
           batch_size: Batch = 32, lr: Lr = 1e-4,
           k: Annotated[int, typer.Option("--k", help="Alignment mask: frame i sees audio "
                                          "frames j with |i - j| <= k; -1 for no mask.")] = 3,
           lambda_exp: Annotated[float, typer.Option(help="Weight of L_exp.")] = 1.0,
           lambda_pose: Annotated[float, typer.Option(help="Weight of L_pose.")] = 1.0,
           lambda_sync: Annotated[float, typer.Option(help="Weight of L_sync (0: off, no lip "
                                                      "expert needed).")] = 0.1,
           lip_expert: Annotated[Path | None, typer.Option(
               "--lip-expert", help="`fd2talk-train lipsync` checkpoint (needed when "
               "--lambda-sync > 0).")] = None,
           ema_decay: Annotated[float, typer.Option(help="EMA decay.")] = 0.999,
           val_split: ValSplit = "val", val_every: Every = 250, save_every: Every = 500,
           log_every: Every = 10, seed: Seed = 0, device: Device = DeviceName.auto,
           workers: Workers = 0, epoch_batches: EpochBatches = 500, resume: Resume = False,
           quiet: Quiet = False) -> None:
    """Train the Exp and Pose Transformers (stage 1): L = l_exp L_exp + l_pose L_pose +
    l_sync L_sync."""
    from .train_motion import MotionTrainConfig, train_motion

    cfg = MotionTrainConfig(
        shards=str(shards.resolve()), out=str(out.resolve()), preset=preset.value, steps=steps,
        batch_size=batch_size, lr=lr, k=None if k < 0 else k, lambda_exp=lambda_exp,
        lambda_pose=lambda_pose, lambda_sync=lambda_sync,
        lip_expert=str(lip_expert.resolve()) if lip_expert else None, ema_decay=ema_decay,
        val_split=_split(val_split), val_every=val_every, save_every=save_every,
        log_every=log_every, seed=seed, device=device.value, workers=workers,
        epoch_batches=epoch_batches)
    train_motion(cfg, resume=resume, progress=not quiet)
    if not quiet:
        _summary("motion (EMA weights, x0 loss on normalised coefficients)", out)


ImageSize = Annotated[int, typer.Option("--image-size", help="Frames are resized to this side "
                                        "(256, the crop size; smaller for CPU smoke runs).")]


@app.command()
def autoencoder(shards: Shards, out: Out, preset: PresetOpt = Preset.tiny, steps: Steps = 2000,
                batch_size: Batch = 8, lr: Lr = 1e-4,
                pretrained: Annotated[Path | None, typer.Option(
                    "--pretrained", help="Start from LDM's VQ-f4: a local diffusers VQModel "
                    "directory (e.g. the `vqvae` folder of CompVis/ldm-celebahq-256).")] = None,
                vgg_weights: Annotated[Path | None, typer.Option(
                    "--vgg-weights", help="vgg16-397923af.pth for LPIPS (default $FD2TALK_VGG16, "
                    "then torchvision's cache).")] = None,
                lambda_rec: Annotated[float, typer.Option(help="Weight of the L2 term.")] = 1.0,
                lambda_per: Annotated[float, typer.Option(help="Weight of LPIPS (0: off, no "
                                                          "VGG weights needed).")] = 1.0,
                lambda_vq: Annotated[float, typer.Option(help="Weight of the VQ loss.")] = 1.0,
                image_size: ImageSize = 256, val_split: ValSplit = "val",
                val_every: Every = 250, save_every: Every = 500, log_every: Every = 10,
                seed: Seed = 0, device: Device = DeviceName.auto, workers: Workers = 0,
                epoch_batches: EpochBatches = 500, resume: Resume = False,
                quiet: Quiet = False) -> None:
    """Fine-tune the reference-conditioned VQ autoencoder (stage 2): L2 + LPIPS on two frames
    of one clip; writes RUN/autoencoder."""
    from .train_autoencoder import AutoencoderTrainConfig, train_autoencoder

    cfg = AutoencoderTrainConfig(
        shards=str(shards.resolve()), out=str(out.resolve()), preset=preset.value, steps=steps,
        batch_size=batch_size, lr=lr, pretrained=str(pretrained.resolve()) if pretrained else None,
        vgg_weights=str(vgg_weights.resolve()) if vgg_weights else None, lambda_rec=lambda_rec,
        lambda_per=lambda_per, lambda_vq=lambda_vq, image_size=image_size,
        val_split=_split(val_split), val_every=val_every, save_every=save_every,
        log_every=log_every, seed=seed, device=device.value, workers=workers,
        epoch_batches=epoch_batches)
    train_autoencoder(cfg, resume=resume, progress=not quiet)
    if not quiet:
        _summary("autoencoder (PSNR of D([E(F1), E(F2)]) vs F2, dB)", out)


class Cond(StrEnum):
    dual = "dual"
    concat = "concat"


@app.command()
def frames(shards: Shards, out: Out,
           autoencoder: Annotated[Path, typer.Option(
               "--autoencoder", help="The autoencoder `fd2talk-train autoencoder` wrote "
               "(RUN/autoencoder).")],
           preset: PresetOpt = Preset.tiny, steps: Steps = 2000, batch_size: Batch = 32,
           lr: Lr = 1e-4,
           motion: Annotated[Path | None, typer.Option(
               "--motion", help="Stage-1 checkpoint: condition on its predicted motion (the "
               "paper); default the ground-truth coefficients.")] = None,
           motion_steps: Annotated[int, typer.Option(help="Sampler steps for --motion.")] = 50,
           cond: Annotated[Cond, typer.Option(help="dual: separate motion and reference "
                                              "cross-attentions (paper); concat: the ablation.")
                           ] = Cond.dual,
           latent_cache: Annotated[bool, typer.Option(
               help="Use the shards' latents (`fd2talk-prep latents`) when they were made by "
               "this autoencoder.")] = True,
           jitter: Annotated[float, typer.Option(
               min=0.0, max=1.0,
               help="Colour jitter shared by reference and target: a random channel order, "
               "gain 1 +- J and offset +- J per channel. 0 (the paper) for large datasets; "
               "about 0.2 for small ones (the bundled demo), whose few videos the UNet would "
               "otherwise tell apart by their motion and so ignore the reference. Encodes "
               "frames on the fly (needs --no-latent-cache when there is a cache).")] = 0.0,
           image_size: ImageSize = 256, ema_decay: Annotated[float, typer.Option(
               help="EMA decay.")] = 0.999,
           val_split: ValSplit = "val", val_every: Every = 250, save_every: Every = 500,
           log_every: Every = 10, seed: Seed = 0, device: Device = DeviceName.auto,
           workers: Workers = 0, epoch_batches: EpochBatches = 500, resume: Resume = False,
           quiet: Quiet = False) -> None:
    """Train the dual cross-attention frame UNet (stage 2) on (J0, t, beta, p, x) tuples."""
    from .train_frames import FramesTrainConfig, train_frames

    cfg = FramesTrainConfig(
        shards=str(shards.resolve()), out=str(out.resolve()), preset=preset.value, steps=steps,
        batch_size=batch_size, lr=lr, autoencoder=str(autoencoder.resolve()),
        motion=str(motion.resolve()) if motion else None, motion_steps=motion_steps,
        cond=cond.value, latent_cache=latent_cache, jitter=jitter, image_size=image_size,
        ema_decay=ema_decay,
        val_split=_split(val_split), val_every=val_every, save_every=save_every,
        log_every=log_every, seed=seed, device=device.value, workers=workers,
        epoch_batches=epoch_batches)
    train_frames(cfg, resume=resume, progress=not quiet)
    if not quiet:
        _summary("frames (EMA weights, x0 loss on latents)", out)


def train_main() -> None:
    try:
        app()
    except UserError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def generate_main() -> None:
    print("fd2talk-generate is not implemented yet: it lands with the generation issue. "
          "Stage 1 sampling is available from Python: fd2talk.model.motion.sample(...).",
          file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":  # `python -m fd2talk.model.cli` (what torchrun -m launches)
    train_main()
