"""Generation (paper section 3, inference): one portrait + speech -> a talking-head video.

    pipe = FD2TalkPipeline.from_pretrained("work/model")       # once (model folder or runs)
    result = pipe("portrait.jpg", "speech.wav", out="video.mp4", options=Options(seed=1))
    result.motion["exp"], result.timings, result.summary()

A call runs the steps as training saw their inputs, each in a module of its own:
1. the reference (`reference.py`): the portrait read upright, its largest face (or
   `face_index`) found and framed as the crop stage frames training clips, cut to the 256
   crop; the speech decoded from any format at 16 kHz mono, F = round(seconds * 25) frames,
   the last partial frame included;
2. motion (stage 1, section 3.2; `motion.py`): the speech featurised with the backend the
   motion model was trained on, the Exp/Pose Transformers over all 25-frame windows,
   denoised jointly; pose replaced when asked (`still`: the reference's own pose; `from:`
   another video's or a .npz's, `pose.py`), then pose and expression scaled;
3. frames (stage 2, section 3.3; `frames.py`): the crop resized to the UNet's image size,
   the UNet in batches of `batch_size` frames (the reference's φ2 keys/values computed
   once), decoded D([x, J0]);
4. the sink (`outputs.py`): each batch handed to the encoder as it comes, so peak memory does
   not grow with the audio's length (pasted back into the portrait when asked, `paste.py`);
   a few frames kept for the preview.

The CLI (`fd2talk-generate`, fd2talk/cli/generate.py) is a thin wrapper; `fd2talk-eval` and
`fd2talk-app` call this same object. Options and Result are in `options.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.model.generation.options import Options, PoseMode, Reference, Result
from fd2talk.model.generation.outputs import StageClock, VideoSink
from fd2talk.model.generation.pose import fit_length, pose_track
from fd2talk.model.generation.reference import find_reference, measure_reference


def scale_motion(motion: dict, pose_scale: float, expression_scale: float) -> dict:
    """Pose scaled around its mean over the video, expression coefficients scaled (0 is the
    neutral face for both backends: blendshape scores, BFM expression offsets)."""
    pose = motion["pose"]
    centre = pose.mean(0, keepdims=True)
    return {
        "exp": (motion["exp"] * expression_scale).astype(np.float32),
        "pose": (centre + pose_scale * (pose - centre)).astype(np.float32),
    }


class FD2TalkPipeline:
    """Both stages, loaded once, called once per (portrait, speech) job (diffusers style)."""

    def __init__(
        self,
        motion,
        frames,
        face_model: str | None = None,
        wav2vec2: str | None = None,
        dtype: str = "fp32",
    ):
        from fd2talk.core.device import autocast

        self.motion_model, self.frame_model = motion, frames
        self.face_model, self.wav2vec2, self.dtype = face_model, wav2vec2, dtype
        autocast(frames.device, dtype)  # an impossible dtype fails now, not mid-job
        self.image_size = int(frames.image_size)

    @classmethod
    def from_pretrained(
        cls,
        *paths: str | Path,
        device: str = "auto",
        dtype: str = "fp32",
        face_model: str | None = None,
        wav2vec2: str | None = None,
    ) -> FD2TalkPipeline:
        """From a model folder with both stages (`fd2talk-train export`), or several sources
        (model folders, run directories, checkpoints) that together hold motion + frames."""
        from fd2talk.core.device import resolve_device
        from fd2talk.model.generation.frames import from_parts
        from fd2talk.model.generation.motion import from_part
        from fd2talk.model.store import folder as pretrained

        if not paths:
            raise UserError(
                "give a model folder (fd2talk-train export writes one; the demo's is work/model)"
            )
        for p in paths:
            if not Path(p).exists():
                raise UserError(
                    f"model {p} not found: pass the folder `fd2talk-train export` "
                    "wrote (bash install.sh makes work/model) or run directories"
                )
        parts = pretrained.load_parts(list(paths))
        for name, what in (
            ("motion", "stage 1 (fd2talk-train motion)"),
            ("frames", "stage 2 (fd2talk-train frames)"),
        ):
            if name not in parts:
                have = ", ".join(sorted(parts)) or "nothing"
                raise UserError(
                    f"{', '.join(map(str, paths))} holds {have} but no {name} part: "
                    f"add {what}, e.g. `fd2talk-train export RUN_MOTION RUN_FRAMES "
                    "--out MODEL`"
                )
        pretrained.check_compatible(parts)
        dev = resolve_device(device)
        if dev.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserError("--device cuda, but torch sees no CUDA device: use --device cpu")
        frames = from_parts(parts["frames"], parts["autoencoder"], dev)
        return cls(from_part(parts["motion"], dev), frames, face_model, wav2vec2, dtype)

    # ---- the steps, each callable alone -----------------------------------------------------

    def reference(
        self,
        image: str | Path | np.ndarray,
        face_index: int | None = None,
        notes: list | None = None,
        crop: bool = True,
    ) -> Reference:
        """The portrait's face crop (`find_reference` with this pipeline's face model)."""
        return find_reference(image, self.face_model, face_index, notes, crop)

    def reference_motion(self, ref: Reference) -> Reference:
        """Measure the reference crop's expression and pose (into `ref`) with the coefficient
        backend of the training shards."""
        return measure_reference(ref, self.motion_model.info.coeffs, self.face_model)

    def motion(
        self, audio: np.ndarray, frames: int, options: Options, ref: Reference, notes: list
    ) -> dict:
        """exp (F, D_exp), pose (F, 6) for 16 kHz samples (F = frames), as options ask."""
        from fd2talk.model.generation.motion import sample, speech_features

        feats = speech_features(self.motion_model, audio, frames, self.wav2vec2)
        m = sample(
            self.motion_model,
            feats,
            steps=options.steps or self.motion_model.diffusion.config.sample_steps,
            eta=options.eta,
            seed=options.seed,
            solver=options.solver,
        )
        if options.pose_mode is PoseMode.still:
            m["pose"] = np.repeat(self.reference_motion(ref).pose[None], frames, 0)
        elif options.pose_mode is PoseMode.source:
            m["pose"] = pose_track(
                options.pose_source, frames, notes, self.motion_model.info.coeffs, self.face_model
            )
        elif self.frame_model.relative_pose:  # generated head motion, around the portrait's pose
            pose = self.reference_motion(ref).pose
            m["pose"] = m["pose"] - m["pose"].mean(0, keepdims=True) + pose
        return scale_motion(m, options.pose_scale, options.expression_scale)

    def frames(self, ref: Reference, motion: dict, options: Options) -> Iterator[np.ndarray]:
        """Stage 2: the video's (b, S, S, 3) uint8 frames (S = image_size), `batch_size` at a
        time, rendered from the reference crop and motion exp (F, D_exp), pose (F, 6)."""
        import cv2
        import torch

        from fd2talk.model.generation.frames import iter_frames

        s = self.image_size
        ref_small = cv2.resize(ref.crop, (s, s), interpolation=cv2.INTER_AREA)
        ref_t = torch.from_numpy(ref_small).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, S, S)
        for batch in iter_frames(
            self.frame_model,
            ref_t,
            motion["exp"],
            motion["pose"],
            steps=options.steps or self.frame_model.diffusion.config.sample_steps,
            eta=options.eta,
            seed=options.seed,
            chunk=options.batch_size,
            solver=options.solver,
            noise=options.noise,
            dtype=self.dtype,
            ref_pose=ref.pose if self.frame_model.relative_pose else None,
        ):
            yield (
                ((batch.permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5)
                .round()
                .clip(0, 255)
                .astype(np.uint8)
            )  # (b, S, S, 3)

    # ---- one job ----------------------------------------------------------------------------

    def __call__(
        self,
        image: str | Path | np.ndarray,
        audio: str | Path,
        out: str | Path | None = None,
        options: Options = Options(),
        keep_frames: bool = False,
        progress: bool = False,
        motion: dict | None = None,
        callback: Callable | None = None,
    ) -> Result:
        """Generate one video. With `out`, the mp4 is written as frames come (and `audio`
        muxed); `keep_frames` also returns all model-size frames (memory grows with length).
        `motion`: exp/pose to render instead of sampling stage 1 (e.g. a --save-coeffs file).
        `callback(stage, done, total)` is called as the stages go ("reference", "motion",
        "frames" per batch, "encode"): a web page's progress bar, for one."""
        from fd2talk.core import media

        if options.paste_back and out is None:
            raise UserError("paste_back needs an output video (out=...)")
        clock, notes = StageClock(callback), []

        # 1. the reference (and the speech's length in frames)
        clock.tell("reference", 0, 1)
        speech = media.read_speech(audio)
        n = media.frame_count(speech)
        ref = self.reference(image, options.face_index, notes, options.crop)
        if self.frame_model.relative_pose:
            self.reference_motion(ref)
        clock.lap("reference")

        # 2. motion (stage 1), unless given
        clock.tell("motion", 0, 1)
        if motion is None:
            m = self.motion(speech, n, options, ref, notes)
        else:
            m = {k: fit_length(np.asarray(motion[k], np.float32), n) for k in ("exp", "pose")}
        clock.lap("motion")
        clock.tell("motion", 1, 1)

        # 3. frames (stage 2), batch by batch into 4. the sink (video, preview, progress)
        result = Result(m, clock.timings, n, ref, notes=notes, speech=speech)
        with VideoSink(
            result, clock, out, audio, options, self.image_size, keep_frames, progress
        ) as sink:
            for video in self.frames(ref, m, options):
                sink.write(video)
            return sink.close()
