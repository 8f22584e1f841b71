"""Generation (paper section 3, inference): one portrait + speech -> a talking-head video.

    pipe = FD2TalkPipeline.from_pretrained("work/model")       # once (model folder or runs)
    result = pipe("portrait.jpg", "speech.wav", out="video.mp4", options=Options(seed=1))
    result.motion["exp"], result.timings, result.summary()

The steps, each as training saw its inputs:
1. the portrait: read upright in any mode (media_io), its faces found with the data pipeline's
   detector (BlazeFace at the crop stage's 320 px), the largest (or `face_index`) framed with
   the crop stage's box rule and cut to the 256 crop, then resized to the UNet's image size;
2. the speech: decoded from any format at 16 kHz mono, featurised with the backend the motion
   model was trained on; F = round(seconds * 25) frames, the last partial frame included;
3. motion: the Exp/Pose Transformers over all 25-frame windows, denoised jointly
   (model/generation/motion.py); pose replaced when asked (`still`: the reference's own pose; `from:`
   another video's or a .npz's), then pose/expression scaled;
4. frames: the UNet in batches of `batch_size` frames (reference φ2 keys/values computed once),
   decoded D([x, J0]) and handed to the encoder as they come (media_io.VideoWriter), so peak
   memory does not grow with the audio's length; a few frames are kept for the preview.

The CLI (`fd2talk-generate`, fd2talk/cli/model.py) is a thin wrapper; `fd2talk-eval` and
`fd2talk-app` call this same object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fd2talk.core.errors import UserError
from fd2talk.core.schema import CROP_SIZE, FPS, POSE_DIM, SAMPLES_PER_FRAME

DETECT_SIZE = 320  # long side the detector sees (the crop stage's default detect_size)
MIN_FACE = 64  # px: smaller faces are refused (the crop stage's min_face)
MAX_PASTE_SIDE = 1920  # paste-back output: the portrait scaled down to this long side at most
PREVIEW_FRAMES = 8  # frames over time in the preview
NOISE_DEFAULT = "shared"  # measured less flicker than independent noise (bench/generate.py)


@dataclass(frozen=True)
class Options:
    """What one generation job may change (the CLI's options)."""

    seed: int = 0
    steps: int | None = None  # sampler steps for both stages (None: each model's own default)
    eta: float = 0.0  # 0: deterministic DDIM; 1: ancestral (ddim solver only)
    solver: str = "ddim"  # "ddim" (the paper's eq. 5) or "dpm++" (few-step DPM-Solver++)
    batch_size: int = 25  # frames denoised per UNet batch
    pose: str = "generated"  # "generated" | "still" | "from:VIDEO_OR_NPZ"
    pose_scale: float = 1.0  # head motion amplitude around its mean (0: no head motion)
    expression_scale: float = 1.0  # expression coefficients times this
    noise: str = NOISE_DEFAULT  # "shared" start noise by all frames or "independent"
    face_index: int | None = None  # which face, largest first (None: the largest)
    crop: bool = True  # False: the image is already a face crop framed as training crops
    paste_back: bool = False  # blend the face back into the whole portrait
    size: int = CROP_SIZE  # side of the face video (frames are upscaled to it)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.eta < 0:
            raise UserError(f"--eta must be >= 0, got {self.eta}")
        if self.solver not in ("ddim", "dpm++"):
            raise UserError(f"--solver must be ddim or dpm++, not {self.solver!r}")
        if self.solver == "dpm++" and self.eta > 0:
            raise UserError("--eta > 0 needs --solver ddim (DPM-Solver++ is deterministic)")
        if not (self.pose in ("generated", "still") or self.pose.startswith("from:")):
            raise UserError(f"--pose must be generated, still or from:VIDEO_OR_NPZ, not "
                            f"{self.pose!r}")
        if self.pose_scale < 0 or self.expression_scale < 0:
            raise UserError("--pose-scale and --expression-scale must be >= 0")
        if self.size < 16 or self.size % 2:
            raise UserError(f"--size must be an even number >= 16, got {self.size}")


@dataclass
class Reference:
    """The portrait and the face crop the models see."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, upright
    crop: np.ndarray  # (256, 256, 3) uint8: the crop stage's framing
    box: tuple[int, int, int, int]  # the crop's square in `image` (x0, y0, x1, y1)
    faces: int  # faces found
    pose: np.ndarray | None = None  # (6,) its pose, when measured (`reference_motion`)
    exp: np.ndarray | None = None  # (D_exp,) its expression, when measured


@dataclass
class Result:
    """What one job produced."""

    motion: dict  # exp (F, D_exp), pose (F, 6): what the frames were made from
    timings: dict  # seconds per stage
    frames: int  # video frames (F)
    reference: Reference
    out: Path | None = None
    video: np.ndarray | None = None  # (F, S, S, 3) uint8 model-size frames (keep_frames=True)
    preview_frames: list = field(default_factory=list)  # [(index, (S, S, 3) uint8)]
    speech: np.ndarray | None = None  # the 16 kHz samples the video was made for
    notes: list = field(default_factory=list)  # things the user should know

    @property
    def seconds(self) -> float:
        return self.frames / FPS

    def summary(self) -> str:
        """Seconds of compute per second of video, per stage, and in all."""
        total = sum(self.timings.values())
        per = ", ".join(f"{k} {v / self.seconds:.2f}" for k, v in self.timings.items())
        return (f"{self.frames} frames ({self.seconds:.1f} s of video) in {total:.1f} s: "
                f"{total / self.seconds:.2f} s of compute per s of video ({per})")


def _coeffs_stage(backend: str, face_model: str | None):
    from fd2talk.core.skip import PrepError
    from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage

    try:
        return CoeffsStage(CoeffsConfig(backend=backend, face_model=face_model))
    except PrepError as e:
        raise UserError(str(e)) from None


def fit_length(track: np.ndarray, frames: int) -> np.ndarray:
    """A (P, D) track cut or extended to `frames` rows: longer ones are cut, shorter ones play
    forwards then backwards (no jump where they repeat)."""
    if len(track) >= frames:
        return track[:frames]
    bounce = np.concatenate([track, track[-2:0:-1]]) if len(track) > 2 else track
    reps = -(-frames // len(bounce))
    return np.tile(bounce, (reps, 1))[:frames]


def scale_motion(motion: dict, pose_scale: float, expression_scale: float) -> dict:
    """Pose scaled around its mean over the video, expression coefficients scaled (0 is the
    neutral face for both backends: blendshape scores, BFM expression offsets)."""
    pose = motion["pose"]
    centre = pose.mean(0, keepdims=True)
    return {"exp": (motion["exp"] * expression_scale).astype(np.float32),
            "pose": (centre + pose_scale * (pose - centre)).astype(np.float32)}


def find_reference(image: str | Path | np.ndarray, face_model: str | None = None,
                   face_index: int | None = None, notes: list | None = None,
                   crop: bool = True) -> Reference:
    """The portrait's face crop, framed as `fd2talk-prep crop` frames training clips
    (crop=False: the image is such a crop already, e.g. a frame of a shard's clip)."""
    import cv2

    from fd2talk.core.media_io import read_image, to_rgb8
    from fd2talk.pipeline.backends.detect import MediaPipeDetector
    from fd2talk.pipeline.stages.tubes import crop_box

    img = read_image(image) if isinstance(image, (str, Path)) else to_rgb8(image)
    h, w = img.shape[:2]
    if min(h, w) < 32:
        raise UserError(f"the portrait is {w}x{h} px: use one at least 256 px a side")
    if not crop:
        if abs(h - w) > 2:
            raise UserError(f"--no-crop needs a square face crop, got {w}x{h}: leave out "
                            "--no-crop to find and frame the face")
        interp = cv2.INTER_AREA if w >= CROP_SIZE else cv2.INTER_CUBIC
        return Reference(img, cv2.resize(img, (CROP_SIZE, CROP_SIZE), interpolation=interp),
                         (0, 0, w, h), 1)
    k = min(1.0, DETECT_SIZE / max(h, w))
    small = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    with MediaPipeDetector(face_model) as detector:
        faces = detector.detect(small)
    if not faces:
        raise UserError("no face found in the portrait: use a photo with one clearly "
                        "visible, roughly frontal face")
    faces = sorted(faces, key=lambda f: -(f[2] - f[0]) * (f[3] - f[1]))  # largest first
    i = 0 if face_index is None else face_index
    if not 0 <= i < len(faces):
        raise UserError(f"--face-index {i}: the portrait has {len(faces)} face(s), numbered "
                        f"0 to {len(faces) - 1} from the largest")
    if len(faces) > 1 and face_index is None and notes is not None:
        notes.append(f"{len(faces)} faces in the portrait: animating the largest "
                     "(--face-index picks another, 0 = largest)")
    box = [v / k for v in faces[i][:4]]
    side = max(box[2] - box[0], box[3] - box[1])
    if side < MIN_FACE:
        raise UserError(f"the face is {side:.0f} px, smaller than the {MIN_FACE} px training "
                        "faces had at least: use a closer or larger portrait")
    x0, y0, x1, y1 = crop_box(box, w, h)
    region = np.ascontiguousarray(img[y0:y1, x0:x1])
    interp = cv2.INTER_AREA if x1 - x0 >= CROP_SIZE else cv2.INTER_CUBIC
    crop = cv2.resize(region, (CROP_SIZE, CROP_SIZE), interpolation=interp)
    return Reference(img, crop, (x0, y0, x1, y1), len(faces))


class FD2TalkPipeline:
    """Both stages, loaded once, called once per (portrait, speech) job (diffusers style)."""

    def __init__(self, motion, frames, face_model: str | None = None,
                 wav2vec2: str | None = None, dtype: str = "fp32"):
        from fd2talk.model.generation.frames import autocast

        self.motion_model, self.frame_model = motion, frames
        self.face_model, self.wav2vec2, self.dtype = face_model, wav2vec2, dtype
        autocast(frames.device, dtype)  # an impossible dtype fails now, not mid-job
        self.image_size = int(frames.image_size)

    @classmethod
    def from_pretrained(cls, *paths: str | Path, device: str = "auto", dtype: str = "fp32",
                        face_model: str | None = None, wav2vec2: str | None = None
                        ) -> FD2TalkPipeline:
        """From a model folder with both stages (`fd2talk-train export`), or several sources
        (model folders, run directories, checkpoints) that together hold motion + frames."""
        from fd2talk.core.device import resolve_device
        from fd2talk.model.generation.frames import from_parts
        from fd2talk.model.generation.motion import from_part
        from fd2talk.model.store import folder as pretrained

        if not paths:
            raise UserError("give a model folder (fd2talk-train export writes one; the demo's "
                            "is work/model)")
        for p in paths:
            if not Path(p).exists():
                raise UserError(f"model {p} not found: pass the folder `fd2talk-train export` "
                                "wrote (bash install.sh makes work/model) or run directories")
        parts = pretrained.load_parts(list(paths))
        for name, what in (("motion", "stage 1 (fd2talk-train motion)"),
                           ("frames", "stage 2 (fd2talk-train frames)")):
            if name not in parts:
                have = ", ".join(sorted(parts)) or "nothing"
                raise UserError(f"{', '.join(map(str, paths))} holds {have} but no {name} part: "
                                f"add {what}, e.g. `fd2talk-train export RUN_MOTION RUN_FRAMES "
                                "--out MODEL`")
        pretrained.check_compatible(parts)
        dev = resolve_device(device)
        if dev.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserError("--device cuda, but torch sees no CUDA device: use --device cpu")
        frames = from_parts(parts["frames"], parts["autoencoder"], dev)
        return cls(from_part(parts["motion"], dev), frames, face_model, wav2vec2, dtype)

    # ---- 1. the reference -------------------------------------------------------------------

    def reference(self, image: str | Path | np.ndarray, face_index: int | None = None,
                  notes: list | None = None, crop: bool = True) -> Reference:
        """The portrait's face crop (`find_reference` with this pipeline's face model)."""
        return find_reference(image, self.face_model, face_index, notes, crop)

    def reference_motion(self, ref: Reference) -> Reference:
        """Measure the reference crop's expression and pose (into `ref`) with the coefficient
        backend of the training shards."""
        if ref.pose is not None:
            return ref
        stage = _coeffs_stage(self.motion_model.info.coeffs, self.face_model)
        arrays = stage.coefficients([ref.crop])
        stage.close()
        if not arrays["valid"][0]:
            raise UserError("the landmarker finds no face in the portrait's crop, so its pose "
                            "and expression are unknown: use a clearer, more frontal portrait")
        ref.exp = arrays["exp"][0].astype(np.float32)
        ref.pose = arrays["pose"][0].astype(np.float32)
        return ref

    # ---- 2./3. speech and motion ------------------------------------------------------------

    def pose_track(self, source: str, frames: int, notes: list) -> np.ndarray:
        """(frames, 6) pose from a .npz (a `pose` array, e.g. --save-coeffs or a coeffs file)
        or a video (its largest face, cropped as training crops, through the backend)."""
        path = Path(source)
        if not path.is_file():
            raise UserError(f"--pose from:{source}: file not found")
        if path.suffix == ".npz":
            with np.load(path) as z:
                if "pose" not in z:
                    raise UserError(f"--pose from:{path}: the .npz has no `pose` array (it has "
                                    f"{', '.join(z.files)})")
                pose = np.asarray(z["pose"], np.float32)
        else:
            pose = self.video_pose(path)
        if pose.ndim != 2 or pose.shape[1] != POSE_DIM or not len(pose):
            raise UserError(f"--pose from:{path}: pose of shape {pose.shape}, expected "
                            f"(frames, {POSE_DIM})")
        if not np.isfinite(pose).all():
            raise UserError(f"--pose from:{path}: the pose holds inf/NaN")
        if len(pose) != frames:
            notes.append(f"pose from {path.name}: {len(pose)} frames for {frames}; "
                         f"{'cut' if len(pose) > frames else 'played back and forth'}")
        return fit_length(pose, frames)

    def video_pose(self, path: Path) -> np.ndarray:
        """Per-frame pose of a video's largest face: one fixed crop (the union of its boxes,
        the crop stage's rule), the coefficient backend on every crop frame; frames without
        a face take their neighbour's pose."""
        from fd2talk.core import media
        from fd2talk.core.skip import Skip
        from fd2talk.pipeline.backends.detect import MediaPipeDetector
        from fd2talk.pipeline.stages.tubes import crop_box

        try:
            p = media.probe(path, need_audio=False)
            k = min(1.0, DETECT_SIZE / max(p.width, p.height))
            dw, dh = max(2, round(p.width * k / 2) * 2), max(2, round(p.height * k / 2) * 2)
            boxes = []
            with MediaPipeDetector(self.face_model) as det:
                for im in media.iter_frames(path, dw, dh, 600.0, [("fps", 25)],
                                            stream=p.video_index):
                    faces = det.detect(im)
                    if faces:
                        b = max(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))
                        boxes.append([b[0] * p.width / dw, b[1] * p.height / dh,
                                      b[2] * p.width / dw, b[3] * p.height / dh])
            if not boxes:
                raise UserError(f"--pose from:{path}: no face found in the video")
            b = np.array(boxes)
            box = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
            x0, y0, x1, y1 = crop_box(box, p.width, p.height)
            crops = media.iter_frames(path, CROP_SIZE, CROP_SIZE, 600.0,
                                      [("fps", 25), ("crop", x1 - x0, y1 - y0, x0, y0)],
                                      stream=p.video_index)
            stage = _coeffs_stage(self.motion_model.info.coeffs, self.face_model)
            arrays = stage.coefficients(crops)
            stage.close()
        except Skip as e:
            raise UserError(f"--pose from:{path}: {e.detail}") from None
        valid, pose = arrays["valid"], arrays["pose"].astype(np.float32)
        if not valid.any():
            raise UserError(f"--pose from:{path}: the landmarker finds no face in its crops")
        idx = np.flatnonzero(valid)
        nearest = idx[np.abs(np.arange(len(pose))[:, None] - idx[None]).argmin(1)]
        return pose[nearest]

    def motion(self, audio: np.ndarray, frames: int, options: Options, ref: Reference,
               notes: list) -> dict:
        """exp (F, D_exp), pose (F, 6) for 16 kHz samples (F = frames), as options ask."""
        from fd2talk.model.generation.motion import sample, speech_features

        feats = speech_features(self.motion_model, audio, frames, self.wav2vec2)
        m = sample(self.motion_model, feats, steps=options.steps or
                   self.motion_model.diffusion.config.sample_steps, eta=options.eta,
                   seed=options.seed, solver=options.solver)
        if options.pose == "still":
            m["pose"] = np.repeat(self.reference_motion(ref).pose[None], frames, 0)
        elif options.pose.startswith("from:"):
            m["pose"] = self.pose_track(options.pose[5:], frames, notes)
        elif self.frame_model.relative_pose:  # generated head motion, around the portrait's pose
            pose = self.reference_motion(ref).pose
            m["pose"] = m["pose"] - m["pose"].mean(0, keepdims=True) + pose
        return scale_motion(m, options.pose_scale, options.expression_scale)

    # ---- 4. frames and the video ------------------------------------------------------------

    def __call__(self, image: str | Path | np.ndarray, audio: str | Path,
                 out: str | Path | None = None, options: Options = Options(),
                 keep_frames: bool = False, progress: bool = False,
                 motion: dict | None = None, callback: Callable | None = None) -> Result:
        """Generate one video. With `out`, the mp4 is written as frames come (and `audio`
        muxed); `keep_frames` also returns all model-size frames (memory grows with length).
        `motion`: exp/pose to render instead of sampling stage 1 (e.g. a --save-coeffs file).
        `callback(stage, done, total)` is called as the stages go ("reference", "motion",
        "frames" per batch, "encode"): a web page's progress bar, for one."""
        import torch
        from tqdm import tqdm

        from fd2talk.core.media_io import VideoWriter, frame_count, read_speech
        from fd2talk.model.generation.frames import iter_frames

        timings: dict[str, float] = {}
        notes: list[str] = []
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

        def tell(stage: str, done: int, total: int) -> None:
            if callback is not None:
                callback(stage, done, total)

        if options.paste_back and out is None:
            raise UserError("paste_back needs an output video (out=...)")
        tell("reference", 0, 1)
        samples = read_speech(audio)
        n = frame_count(samples)
        ref = self.reference(image, options.face_index, notes, options.crop)
        if self.frame_model.relative_pose:
            self.reference_motion(ref)
        lap("reference")
        tell("motion", 0, 1)
        if motion is None:
            m = self.motion(samples, n, options, ref, notes)
        else:
            m = {k: fit_length(np.asarray(motion[k], np.float32), n) for k in ("exp", "pose")}
        lap("motion")
        tell("motion", 1, 1)

        import cv2

        s = self.image_size
        ref_small = cv2.resize(ref.crop, (s, s), interpolation=cv2.INTER_AREA)
        ref_t = torch.from_numpy(ref_small).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, S, S)
        keep = set(np.linspace(0, n - 1, min(PREVIEW_FRAMES, n)).round().astype(int).tolist())
        result = Result(m, timings, n, ref, notes=notes, speech=samples)
        writer = None
        if out is not None:
            if options.paste_back:
                paste = Paste(ref)
                writer = VideoWriter(out, paste.width, paste.height, audio)
            else:
                side = max(options.size, s)
                writer = VideoWriter(out, s, s, audio, size=(side, side))
        kept = []
        bar = tqdm(total=n, desc="frames", unit="frame", disable=not progress, leave=False)
        done = 0
        try:
            frames_iter = iter_frames(
                self.frame_model, ref_t, m["exp"], m["pose"],
                steps=options.steps or self.frame_model.diffusion.config.sample_steps,
                eta=options.eta, seed=options.seed, chunk=options.batch_size,
                solver=options.solver, noise=options.noise, dtype=self.dtype,
                ref_pose=ref.pose if self.frame_model.relative_pose else None)
            for batch in frames_iter:
                video = ((batch.permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5).round().clip(
                    0, 255).astype(np.uint8)  # (b, S, S, 3)
                lap("frames")
                for j in range(len(video)):
                    if done + j in keep:
                        result.preview_frames.append((done + j, video[j].copy()))
                if keep_frames:
                    kept.append(video)
                if writer is not None:
                    writer.write(paste(video) if options.paste_back else video)
                    lap("encode")
                done += len(video)
                bar.update(len(video))
                tell("frames", done, n)
            if writer is not None:
                tell("encode", 0, 1)
                result.out = writer.close()
                lap("encode")
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            bar.close()
        if keep_frames:
            result.video = np.concatenate(kept)
        return result


class Paste:
    """Generated face crops blended back into the whole portrait with a feathered mask."""

    def __init__(self, ref: Reference, feather: float = 0.12):
        import cv2

        h, w = ref.image.shape[:2]
        k = min(1.0, MAX_PASTE_SIDE / max(h, w))
        self.width, self.height = max(2, round(w * k / 2) * 2), max(2, round(h * k / 2) * 2)
        self.kx, self.ky = self.width / w, self.height / h
        self.base = cv2.resize(ref.image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        x0, y0, x1, y1 = ref.box
        self.x0, self.y0 = round(x0 * self.kx), round(y0 * self.ky)
        self.x1 = min(self.width, round(x1 * self.kx))
        self.y1 = min(self.height, round(y1 * self.ky))
        bw, bh = self.x1 - self.x0, self.y1 - self.y0
        # a mask 1 inside, falling to 0 over the outer `feather` of the crop (smoothstep)
        u = np.minimum(np.arange(bw) + 0.5, bw - np.arange(bw) - 0.5) / (feather * bw)
        v = np.minimum(np.arange(bh) + 0.5, bh - np.arange(bh) - 0.5) / (feather * bh)
        ramp = lambda a: np.clip(a, 0, 1) ** 2 * (3 - 2 * np.clip(a, 0, 1))  # noqa: E731
        self.mask = (ramp(v)[:, None] * ramp(u)[None, :])[..., None].astype(np.float32)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 crops -> (n, H, W, 3) uint8 portraits."""
        import cv2

        bw, bh = self.x1 - self.x0, self.y1 - self.y0
        out = np.repeat(self.base[None], len(faces), 0)
        for i, face in enumerate(faces):
            big = cv2.resize(face, (bw, bh), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            region = out[i, self.y0:self.y1, self.x0:self.x1].astype(np.float32)
            out[i, self.y0:self.y1, self.x0:self.x1] = np.round(
                region + self.mask * (big - region)).clip(0, 255).astype(np.uint8)
        return out


def save_coeffs(path: str | Path, result: Result, backend: str, audio: str | Path) -> Path:
    """The motion a video was made from as .npz: exp, pose (denormalised), fps, backend; it
    can drive another job (`--pose from:` reads its pose)."""
    from fd2talk.core.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, exp=result.motion["exp"], pose=result.motion["pose"], fps=np.int32(FPS),
                 backend=np.array(backend), audio=np.array(str(audio)))
    return path


def speech_envelope(samples: np.ndarray, frames: int) -> np.ndarray:
    """(frames,) RMS of each 40 ms frame of 16 kHz samples."""
    pad = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    pad[:min(len(samples), len(pad))] = samples[:len(pad)]
    return np.sqrt((pad.reshape(frames, SAMPLES_PER_FRAME) ** 2).mean(1))


def mouth_channel(motion_model) -> tuple[int, str]:
    """The expression channel that shows the mouth opening, and its name."""
    if motion_model.info.coeffs == "mediapipe":
        from fd2talk.pipeline.backends.landmarker import JAW_OPEN

        return JAW_OPEN, "jawOpen"
    k = int(np.argmax(motion_model.stats.std["exp"]))  # deep3d: the expression basis that varies most (jaw in BFM)
    return k, f"exp[{k}]"


def save_preview(path: str | Path, result: Result, motion_model) -> Path:
    """A PNG: the reference crop | frames over time (their indices and times) above, the
    mouth-opening channel against the speech envelope below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fd2talk.core.atomic import atomic_path

    frames = result.preview_frames
    cols = 1 + len(frames)
    fig = plt.figure(figsize=(1.6 * cols, 4.2), dpi=110)
    grid = fig.add_gridspec(2, cols, height_ratios=[1, 1.1])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(result.reference.crop)
    ax.set_title("reference", fontsize=8)
    ax.axis("off")
    for c, (i, im) in enumerate(frames, start=1):
        ax = fig.add_subplot(grid[0, c])
        ax.imshow(im)
        ax.set_title(f"frame {i} ({i / FPS:.1f} s)", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    k, name = mouth_channel(motion_model)
    t = np.arange(result.frames) / FPS
    env = speech_envelope(result.speech, result.frames)
    mouth = result.motion["exp"][:, k]

    def unit(a: np.ndarray) -> np.ndarray:
        return (a - a.min()) / max(float(a.max() - a.min()), 1e-8)

    ax.plot(t, unit(env), color="0.6", lw=1, label="speech envelope (RMS)")
    ax.plot(t, unit(mouth), color="C3", lw=1.5, label=f"generated {name}")
    for i, _ in frames:
        ax.axvline(i / FPS, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("seconds")
    ax.set_yticks([])
    ax.set_xlim(0, max(t[-1], 1 / FPS))
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_title("mouth opening vs speech (each scaled to 0-1)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
