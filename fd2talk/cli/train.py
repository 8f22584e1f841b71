"""`fd2talk-train`: the trainers' command line (thin: build a config, call one function).

    fd2talk-train lipsync  --shards WORK/shards --out runs/lipsync       # the lip expert (first)
    fd2talk-train motion   --shards WORK/shards --out runs/motion --lip-expert runs/lipsync
    fd2talk-train export   runs/motion runs/frames --out my-model         # one model folder

Every run directory holds config.json (settings + git revision), checkpoint.pt (everything a
resume needs), metrics.jsonl and, when it finishes, model/ (the model folder generation
loads); `--resume` continues a run bit-for-bit; under `torchrun --nproc_per_node N` the same
command trains with DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fd2talk.cli.common import Device, Quiet, run
from fd2talk.cli.train_options import (
    PRESET_HELP,
    Accumulate,
    AutoencoderPreset,
    EmaDecay,
    EpochBatches,
    Every,
    ImageSize,
    LipPreset,
    Lr,
    MotionPreset,
    Out,
    Resume,
    Seed,
    Shards,
    Steps,
    UNetPreset,
    ValSplit,
    Windows,
    Workers,
    config_from,
    print_run_summary,
)
from fd2talk.cli.train_recipes import corpus, demo
from fd2talk.core.defaults import defaults
from fd2talk.core.device import DeviceName
from fd2talk.model import configs as C

app = typer.Typer(
    help=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Every option's default is read from the command's config dataclass (model/configs.py), and
# every preset choice from the presets dicts: the CLI and the library cannot disagree.
LIP, MOT = defaults(C.LipsyncTrainConfig), defaults(C.MotionTrainConfig)
AE, FR = defaults(C.AutoencoderTrainConfig), defaults(C.FramesTrainConfig)


@app.command()
def lipsync(
    shards: Shards,
    out: Out,
    preset: Annotated[LipPreset, typer.Option(help=PRESET_HELP)] = LIP["preset"],
    steps: Steps = LIP["steps"],
    batch_size: Windows = LIP["batch_size"],
    lr: Lr = LIP["lr"],
    bfm: Annotated[
        str | None,
        typer.Option(
            "--bfm",
            help="BFM_model_front.mat (or its folder) for deep3d shards (default "
            "$FD2TALK_BFM_DIR); mediapipe shards fit their mouth model from the data.",
        ),
    ] = LIP["bfm"],
    val_split: ValSplit = LIP["val_split"],
    val_every: Every = LIP["val_every"],
    save_every: Every = LIP["save_every"],
    log_every: Every = LIP["log_every"],
    seed: Seed = LIP["seed"],
    device: Device = DeviceName(LIP["device"]),
    workers: Workers = LIP["workers"],
    epoch_batches: EpochBatches = LIP["epoch_batches"],
    accumulate: Accumulate = LIP["accumulate"],
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Pre-train the lip expert (SyncNet-style: in-sync vs time-shifted pairs); reports
    in-sync / off-sync accuracy on the validation split."""
    options = dict(locals())
    from fd2talk.model.training.lipsync import train_lipsync

    train_lipsync(config_from(C.LipsyncTrainConfig, options), resume=resume, progress=not quiet)
    if not quiet:
        print_run_summary("lip expert (in-sync vs shifted audio)", out)


@app.command()
def motion(
    shards: Shards,
    out: Out,
    preset: Annotated[MotionPreset, typer.Option(help=PRESET_HELP)] = MOT["preset"],
    steps: Steps = MOT["steps"],
    batch_size: Windows = MOT["batch_size"],
    lr: Lr = MOT["lr"],
    k: Annotated[
        int,
        typer.Option(
            "--k",
            help="Alignment mask: frame i sees audio frames j with |i - j| <= k; -1 for no mask.",
        ),
    ] = MOT["k"],
    lambda_exp: Annotated[float, typer.Option(help="Weight of L_exp.")] = MOT["lambda_exp"],
    lambda_pose: Annotated[float, typer.Option(help="Weight of L_pose.")] = MOT["lambda_pose"],
    lambda_sync: Annotated[
        float, typer.Option(help="Weight of L_sync (0: off, no lip expert needed).")
    ] = MOT["lambda_sync"],
    lip_expert: Annotated[
        Path | None,
        typer.Option(
            "--lip-expert",
            help="The lip expert: `fd2talk-train lipsync`'s run directory, "
            "model folder or checkpoint (needed when --lambda-sync > 0).",
        ),
    ] = MOT["lip_expert"],
    single_dit: Annotated[
        bool,
        typer.Option(
            "--single-dit",
            help="The paper's Table 2 ablation: one transformer denoises "
            "expression and pose jointly.",
        ),
    ] = MOT["single_dit"],
    fold: Annotated[
        str | None,
        typer.Option(
            "--fold",
            metavar="K/N",
            help="Leave out fold K of N of the training clips (every N-th in key order "
            "from the K-th): train one run per K = 0..N-1 and give them to `fd2talk-train "
            "frames --motion-fold`, so the frame UNet learns from predictions for speech "
            "stage 1 never heard (cross-fitting; the bundled demo does).",
        ),
    ] = MOT["fold"],
    ema_decay: EmaDecay = MOT["ema_decay"],
    val_split: ValSplit = MOT["val_split"],
    val_every: Every = MOT["val_every"],
    save_every: Every = MOT["save_every"],
    log_every: Every = MOT["log_every"],
    seed: Seed = MOT["seed"],
    device: Device = DeviceName(MOT["device"]),
    workers: Workers = MOT["workers"],
    epoch_batches: EpochBatches = MOT["epoch_batches"],
    accumulate: Accumulate = MOT["accumulate"],
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train the Exp and Pose Transformers (stage 1): L = l_exp L_exp + l_pose L_pose +
    l_sync L_sync."""
    options = dict(locals(), k=None if k < 0 else k)
    from fd2talk.model.training.motion import train_motion

    train_motion(config_from(C.MotionTrainConfig, options), resume=resume, progress=not quiet)
    if not quiet:
        print_run_summary("motion (EMA weights, x0 loss on normalised coefficients)", out)


@app.command()
def autoencoder(
    shards: Shards,
    out: Out,
    preset: Annotated[AutoencoderPreset, typer.Option(help=PRESET_HELP)] = AE["preset"],
    steps: Steps = AE["steps"],
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", help="(reference, target) frame pairs per step (per process)."
        ),
    ] = AE["batch_size"],
    lr: Lr = AE["lr"],
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained",
            help="Start from LDM's VQ-f4: a local diffusers VQModel "
            "directory (e.g. the `vqvae` folder of CompVis/ldm-celebahq-256).",
        ),
    ] = AE["pretrained"],
    vgg_weights: Annotated[
        Path | None,
        typer.Option(
            "--vgg-weights",
            help="vgg16-397923af.pth for LPIPS (default $FD2TALK_VGG16, then torchvision's cache).",
        ),
    ] = AE["vgg_weights"],
    lambda_rec: Annotated[float, typer.Option(help="Weight of the L2 term.")] = AE["lambda_rec"],
    lambda_per: Annotated[
        float, typer.Option(help="Weight of LPIPS (0: off, no VGG weights needed).")
    ] = AE["lambda_per"],
    lambda_vq: Annotated[float, typer.Option(help="Weight of the VQ loss.")] = AE["lambda_vq"],
    jitter: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Colour looks shared by each frame pair: per-channel gain and a gamma "
            "1 +- J. 0 for a pretrained autoencoder; about 0.15 for one trained from "
            "scratch on a few videos (the demo), which would otherwise pull a new "
            "video's colours towards its training videos'.",
        ),
    ] = AE["jitter"],
    image_size: ImageSize = AE["image_size"],
    val_split: ValSplit = AE["val_split"],
    val_every: Every = AE["val_every"],
    save_every: Every = AE["save_every"],
    log_every: Every = AE["log_every"],
    seed: Seed = AE["seed"],
    device: Device = DeviceName(AE["device"]),
    workers: Workers = AE["workers"],
    epoch_batches: EpochBatches = AE["epoch_batches"],
    accumulate: Accumulate = AE["accumulate"],
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune the reference-conditioned VQ autoencoder (stage 2): L2 + LPIPS on two frames
    of one clip; writes RUN/autoencoder (with its measured latent scaling factor)."""
    options = dict(locals())
    from fd2talk.model.training.autoencoder import train_autoencoder

    train_autoencoder(
        config_from(C.AutoencoderTrainConfig, options), resume=resume, progress=not quiet
    )
    if not quiet:
        print_run_summary("autoencoder (PSNR of D([E(F1), E(F2)]) vs F2, dB)", out)


@app.command()
def frames(
    shards: Shards,
    out: Out,
    autoencoder: Annotated[
        Path,
        typer.Option(
            "--autoencoder",
            help="The autoencoder `fd2talk-train autoencoder` wrote (RUN/autoencoder).",
        ),
    ],
    preset: Annotated[UNetPreset, typer.Option(help=PRESET_HELP)] = FR["preset"],
    steps: Steps = FR["steps"],
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", help="Frames (with their reference) per step (per process)."),
    ] = FR["batch_size"],
    lr: Lr = FR["lr"],
    motion: Annotated[
        Path | None,
        typer.Option(
            "--motion",
            help="Stage-1 model (run directory, model folder or checkpoint): "
            "condition on its predicted motion (the paper); default the ground-truth "
            "coefficients.",
        ),
    ] = FR["motion"],
    motion_steps: Annotated[int, typer.Option(help="Sampler steps for --motion.")] = FR[
        "motion_steps"
    ],
    motion_folds: Annotated[
        list[Path] | None,
        typer.Option(
            "--motion-fold",
            help="Repeat once per K: the `fd2talk-train motion --fold K/N` runs. Each "
            "training clip's expression is then predicted by the fold model that never "
            "heard it (the pose stays --motion's): on a small dataset stage 1 knows its "
            "training clips by heart, and the UNet would not learn to render what it makes "
            "of new speech, e.g. a mouth range that is not the person's. Not the paper's; "
            "the bundled demo's recipe uses 2 folds.",
        ),
    ] = FR["motion_folds"],
    cond: Annotated[
        C.Cond,
        typer.Option(
            help="dual: separate motion and reference "
            "cross-attentions (paper); concat: the ablation."
        ),
    ] = C.Cond(FR["cond"]),
    latent_cache: Annotated[
        bool,
        typer.Option(
            help="Use the shards' latents (`fd2talk-prep latents`) when they were made by "
            "this autoencoder."
        ),
    ] = FR["latent_cache"],
    ref_frame: Annotated[
        C.RefFrame,
        typer.Option(
            "--ref-frame",
            help="Each training item's reference: the clip's first frame (the paper) or a "
            "random frame of it (few clips: many reference/target pairs).",
        ),
    ] = C.RefFrame(FR["ref_frame"]),
    ref_input: Annotated[
        bool,
        typer.Option(
            "--ref-input/--no-ref-input",
            help="Also give the UNet the reference latent beside the noisy one at its input "
            "(not the paper's: it reads the reference through phi2 only): small datasets "
            "such as the demo learn to keep the person.",
        ),
    ] = FR["ref_input"],
    relative_pose: Annotated[
        bool,
        typer.Option(
            "--relative-pose/--absolute-pose",
            help="Condition on the head pose relative to the reference frame's (few people, "
            "as the demo: where the head sits tells them apart, and the UNet would draw the "
            "person from it) or on the pose itself (the paper).",
        ),
    ] = FR["relative_pose"],
    jitter: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Colour jitter shared by reference and target: a random channel order, "
            "gain 1 +- J and offset +- J per channel. 0 (the paper) for large datasets; "
            "about 0.2 for small ones (the bundled demo), whose few videos the UNet would "
            "otherwise tell apart by their motion and so ignore the reference. Encodes "
            "frames on the fly (needs --no-latent-cache when there is a cache).",
        ),
    ] = FR["jitter"],
    image_size: ImageSize = FR["image_size"],
    ema_decay: EmaDecay = FR["ema_decay"],
    val_split: ValSplit = FR["val_split"],
    val_every: Every = FR["val_every"],
    save_every: Every = FR["save_every"],
    log_every: Every = FR["log_every"],
    seed: Seed = FR["seed"],
    device: Device = DeviceName(FR["device"]),
    workers: Workers = FR["workers"],
    epoch_batches: EpochBatches = FR["epoch_batches"],
    accumulate: Accumulate = FR["accumulate"],
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train the dual cross-attention frame UNet (stage 2) on (J0, t, beta, p, x) tuples."""
    options = dict(locals(), motion_folds=list(motion_folds or ()))
    from fd2talk.model.training.frames import train_frames

    train_frames(config_from(C.FramesTrainConfig, options), resume=resume, progress=not quiet)
    if not quiet:
        print_run_summary("frames (EMA weights, x0 loss on latents)", out)


@app.command()
def export(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories, checkpoints or model folders: e.g. a motion run and a "
            "frames run."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The model folder to write.")],
) -> None:
    """Write one model folder (model_index.json + a folder per part: config.json and
    safetensors EMA weights) from runs, checkpoints or model folders; parts that were not
    trained to work together are refused."""
    import json

    from fd2talk.model.store.folder import INDEX, export

    folder = export(list(sources), out)
    parts = json.loads((folder / INDEX).read_text())["parts"]
    typer.echo(f"model folder {folder}: {', '.join(parts)}")


app.command()(demo)
app.command()(corpus)


def main() -> None:
    """`fd2talk-train` (and `python -m fd2talk.model.cli`, what torchrun launches)."""
    run(app)
