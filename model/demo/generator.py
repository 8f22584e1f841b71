"""The bundled demo dataset: a talking portrait made offline (issue 2 item 6, DESIGN.md section 6).

`make_demo(work, DemoConfig())` writes `WORK/demo_src/<name>.mp4` source videos
and `WORK/demo_src/manifest.csv` (key, path, video_id, speaker_id, split) for
`fd2talk-prep clip --manifest`. Each video shows one of two real portraits
(`FACES`: scikit-image's astronaut, matplotlib's sample photo of Grace Hopper; the
manifest's speaker_id), mirrored or not, recoloured by a per-video white balance and
gamma, and reframed per video, with

- speech from `speech.py`: espeak-ng (different sentences, voices, speeds per
  video) when it is on PATH, else a synthetic voice (glottal pulses through
  formant resonators, syllable-rate amplitude modulation, pauses between phrases);
- a mouth driven frame by frame by the speech envelope: the opening at time t
  is the speech level (Hann-weighted RMS over 2/25 s around t, in dB against
  the clip's 95th percentile, `RANGE_DB` mapped to [0, 1]); frame i shows the
  opening at its mid-time (i + 0.5) / fps;
- slow head motion: a smooth small rotation, translation and scale.

The mouth is a jaw drop that MediaPipe FaceLandmarker reads as `jawOpen`: the
lower face below the inner-lip line moves down (a lens-shaped profile between
the mouth corners blending into the whole jaw width, fading out under the chin),
the upper lip rises a little, the mouth corners sag, and the gap between the
lips is painted as a dark mouth cavity with a tongue. Each image column's
forward displacement is inverted exactly (it is monotone on either side of the
lip line). Measured with `jaw_open_track` over 60 videos of the astronaut (espeak-ng and
synthetic speech, 4-6 s): Pearson r(jawOpen, opening) = 0.92-0.98, jawOpen ~0.01-0.55;
on the default demo (seed 0, espeak-ng) r = 0.91-0.96 for the astronaut's five videos and
0.97-0.98 for Grace Hopper's five.

Two people, assigned independently of the mirroring (`face_of`), so each appears both ways
round and in the train and held-out splits: with one portrait, a model could tell every
video's appearance from its head pose and never need its reference frame. Two people
cannot fill three splits by speaker, so the manifest pins each video's split (`split`
column: the by-video split of `split.assign_splits` over the video names, as the shards
had before splits by speaker existed; default demo: train demo000-003, 005-007, val
demo008, test demo004, demo009). The shard stage's `--split-by auto` then splits the demo
by video and records why (the pins put each person in several splits).

The ground-truth opening of each video, sampled at 25 fps (clip frame k at
time (k + 0.5) / 25), is saved as `<name>.opening.npy` so later issues can check
that a trained model's mouth channel follows the speech (`ground_truth_openings`).
Outputs are deterministic for a seed and written atomically; a re-run skips
finished videos.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import tempfile
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from fd2talk.core import atomic, media
from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.core.skip import PrepError
from fd2talk.model.demo.speech import (
    SENTENCES,
    VOICES,
    espeak_speech,
    normalise,
    speech_source,
    synthetic_speech,
)
from fd2talk.pipeline.stages.split import assign_splits

DEMO_DIR = "demo_src"
MANIFEST = "manifest.csv"
CONFIG_JSON = "demo.json"
# What the videos show; bumped when that changes, so an old demo folder is refused rather than
# mixed (1: the astronaut alone; 2: two people, `FACES`; 3: the manifest pins each split).
DEMO_VERSION = 3
ENCODE_TIMEOUT = 300.0  # seconds per video

# Speech envelope -> mouth opening.
ENVELOPE_WINDOW = 2 / FPS  # seconds: Hann window around each frame's mid-time
RANGE_DB = 36.0  # levels from (95th percentile - RANGE_DB) to the 95th percentile map to 0..1


@dataclass(frozen=True)
class Face:
    """One demo identity: a portrait and its geometry as MediaPipe FaceLandmarker sees it
    (points measured once, in the portrait's pixels; x, y)."""

    name: str  # the manifest's speaker_id
    # Midpoints of the inner-lip contour pairs from corner to corner (78/78, 191/95, 80/88,
    # 81/178, 82/87, 13/14, 312/317, 311/402, 310/318, 415/324, 308/308): where the lips part.
    mouth_line: tuple[tuple[float, float], ...]
    mouth_corners: tuple[tuple[float, float], ...]  # landmarks 61, 291
    chin: tuple[float, float]  # 152
    jaw_sides: tuple[tuple[float, float], ...]  # 58, 288: the face edge at mouth height
    eyes: tuple[tuple[float, float], ...]  # 33, 263 (outer eye corners)
    nose: tuple[float, float]  # 4: head rotations turn about it
    crop_side: float  # portrait pixels shown in a frame (before the per-video factor)
    crop_y: float  # the frame's centre row (before the per-video offset)

    @property
    def iod(self) -> float:
        """Inter-ocular distance (outer corners) in portrait pixels."""
        return float(np.hypot(*np.subtract(*self.eyes)))

    def image(self) -> np.ndarray:
        """The portrait: (H, W, 3) uint8 RGB."""
        return _PORTRAITS[self.name]()


# scikit-image's astronaut (Eileen Collins, NASA photo; 512x512): the face is ~90 px wide.
ASTRONAUT = Face(
    name="astronaut",
    mouth_line=((203.9, 139.7), (206.7, 141.5), (209.5, 142.9), (213.1, 144.2), (217.7, 145.4),
                (223.1, 146.2), (228.7, 145.9), (233.3, 144.9), (237.0, 143.8), (240.0, 142.7),
                (242.9, 141.1)),
    mouth_corners=((202.3, 139.2), (244.5, 140.6)), chin=(221.4, 177.4),
    jaw_sides=((182.6, 139.8), (265.0, 143.9)), eyes=((195.3, 100.6), (255.3, 103.8)),
    nose=(223.7, 127.0), crop_side=250.0, crop_y=135.0)
# matplotlib's sample photo of Grace Hopper (US Navy, public domain; 512 wide x 600 high):
# frontal, glasses, uniform and cap; the face is ~200 px wide. Framed a little tighter than
# the astronaut so that every per-video framing stays inside the photo.
HOPPER = Face(
    name="hopper",
    mouth_line=((237.0, 279.1), (241.6, 279.0), (245.9, 278.9), (251.6, 278.9), (258.6, 279.2),
                (266.7, 279.4), (275.3, 278.6), (283.0, 277.7), (289.4, 277.2), (294.2, 277.0),
                (299.7, 276.8)),
    mouth_corners=((234.0, 279.4), (302.5, 276.7)), chin=(270.2, 334.6),
    jaw_sides=((188.1, 273.7), (345.2, 264.8)), eyes=((207.2, 193.5), (322.0, 186.7)),
    nose=(266.4, 238.5), crop_side=430.0, crop_y=254.0)
# Two people, neither tied to a flip or a colour look, so that a model can only tell a
# video's appearance from its reference frame (issue 4: the appearance condition matters).
FACES = (ASTRONAUT, HOPPER)

# The light scarf folds inside the astronaut's collar ring look like a face to BlazeFace
# (scores up to 0.79 in mirrored frames, so `crop` made extra face tubes): they are painted
# over with the turtleneck's dark colour (ellipse centre, semi-axes; only below NECK_Y).
COLLAR_CENTRE, COLLAR_AXES, NECK_Y = (212.0, 210.0), (82.0, 54.0), 190.0
TURTLENECK = (22.0, 20.0, 24.0)


def _astronaut() -> np.ndarray:
    import cv2
    from skimage import data

    img = data.astronaut().astype(np.float32)  # (512, 512, 3)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    ring = (((xx - COLLAR_CENTRE[0]) / COLLAR_AXES[0]) ** 2
            + ((yy - COLLAR_CENTRE[1]) / COLLAR_AXES[1]) ** 2) < 1
    m = cv2.GaussianBlur((ring & (yy > NECK_Y)).astype(np.float32), (0, 0), 3)[..., None]
    return np.round(img * (1 - m) + np.array(TURTLENECK) * m).astype(np.uint8)


def _hopper() -> np.ndarray:
    import cv2
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # ships with matplotlib
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.shape != (600, 512, 3):
        raise PrepError(f"demo: matplotlib's sample image {path} is missing or not the "
                        "expected 512x600 photo; reinstall matplotlib (pip install matplotlib)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_PORTRAITS = {"astronaut": _astronaut, "hopper": _hopper}


def face_of(index: int) -> Face:
    """Video `index`'s person: astronaut, hopper, hopper, astronaut, astronaut, ... (period 4,
    while the flip alternates with period 2, so every person appears both ways round)."""
    return FACES[((index + 1) // 2) % 2]


# Jaw-drop warp (lengths relative to the inter-ocular distance `iod` or the mouth-chin span).
MAX_DROP = 0.42  # jaw drop at opening 1, x iod (jawOpen ~0.55 there)
UPPER_LIP_RISE = 0.15  # the upper lip rises by this fraction of the drop
CORNER_SAG = 0.35  # the mouth corners move down by this fraction of the drop
LENS_POWER = 0.6  # lip-gap profile between the corners: (1 - u^2)^LENS_POWER
LIP_BAND = 0.35  # x mouth-chin span: the lens profile blends into the jaw profile
UPPER_BAND = 0.5  # x mouth-chin span: the upper lip's rise fades out above the line
NECK = 1.6  # x mouth-chin span: the drop fades out under the chin (keeps the map monotone)
JAW_FLAT, JAW_EDGE = 0.6, 1.2  # x jaw half width: full drop inside, none outside
CAVITY = (62.0, 20.0, 26.0)  # RGB of the mouth's dark interior
TONGUE = (150.0, 62.0, 70.0)


@dataclass(frozen=True)
class DemoConfig:
    n_videos: int = 10  # distinct video ids, so a 70/10/20 split by video fills all splits
    seconds: float = 6.0  # per video
    size: int = 512  # frame side in pixels
    seed: int = 0
    use_espeak: bool = True  # espeak-ng when on PATH, else (or when False) the synthetic voice
    mixed_formats: bool = True  # videos 3, 8, ...: 30 fps + 44.1 kHz stereo; 4, 9, ...: 24 fps


@dataclass(frozen=True)
class Variant:
    """Everything that differs between demo videos, drawn from (seed, index)."""

    name: str
    face: Face
    fps: int
    sample_rate: int
    channels: int
    flip: bool
    gains: tuple[float, float, float]  # per-channel colour gains (the video's colour look)
    gamma: float
    crop_centre: tuple[float, float]  # portrait pixels, before any flip
    crop_side: float
    motion: tuple[float, ...]  # rot (deg), tx, ty (portrait px), scale, f1, f2 (Hz), phases x8
    voice: str
    speed: int  # espeak words per minute
    pitch: int  # espeak pitch 0..99
    first_sentence: int


def variant(cfg: DemoConfig, index: int) -> Variant:
    rng = np.random.default_rng([cfg.seed, index])
    fps, sr, ch = FPS, SAMPLE_RATE, 1
    if cfg.mixed_formats and index % 5 == 3:
        fps, sr, ch = 30, 44100, 2
    elif cfg.mixed_formats and index % 5 == 4:
        fps = 24
    u = rng.uniform
    face = face_of(index)
    px = face.iod / ASTRONAUT.iod  # lengths below are in astronaut pixels
    motion = (u(1.5, 3.5), u(2, 5) * px, u(1.5, 4) * px, u(0.01, 0.03), u(0.12, 0.3),
              u(0.35, 0.6), *u(0, 2 * np.pi, 8))
    return Variant(
        name=f"demo{index:03d}", face=face, fps=fps, sample_rate=sr, channels=ch,
        flip=bool(index % 2),
        gains=tuple(float(g) for g in u(0.88, 1.12, 3)), gamma=float(u(0.85, 1.15)),
        crop_centre=(face.nose[0] + u(-8, 8) * px, face.crop_y + u(-6, 6) * px),
        crop_side=face.crop_side * u(0.92, 1.12),
        motion=tuple(float(m) for m in motion), voice=VOICES[index % len(VOICES)],
        speed=int(rng.integers(140, 185)), pitch=int(rng.integers(35, 70)),
        first_sentence=int(rng.integers(len(SENTENCES))))


# ---- speech -> mouth opening --------------------------------------------------------------

def mouth_opening(audio: np.ndarray, sample_rate: int, times: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] at `times` (s) from the speech level of (n,) `audio`: (T,) float32.

    The 0 dB reference is the 95th percentile of the level on the 25 fps grid, so the
    same audio gives the same function of time whatever frame rate samples it.
    """
    x = np.asarray(audio, np.float64)
    half = int(ENVELOPE_WINDOW * sample_rate / 2)
    w = np.hanning(2 * half + 1)
    power = np.convolve(np.pad(x * x, half), w / w.sum(), mode="valid")  # (n,) centred

    def level(ts: np.ndarray) -> np.ndarray:
        idx = np.clip(np.round(ts * sample_rate).astype(int), 0, len(x) - 1)
        return 10 * np.log10(power[idx] + 1e-10)

    grid = (np.arange(max(1, round(len(x) / sample_rate * FPS))) + 0.5) / FPS
    ref = np.percentile(level(grid), 95)
    return np.clip((level(np.asarray(times)) - ref + RANGE_DB) / RANGE_DB, 0, 1).astype(np.float32)


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    return (np.arange(n_frames) + 0.5) / fps  # each frame shows its mid-time


# ---- the portrait and its mouth -------------------------------------------------------------

def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


class MouthWarp:
    """Open the mouth of a portrait by `opening` in [0, 1] (see the module docstring).

    `image` (H, W, 3) uint8 is `face`'s portrait (mirrored when `flip`). Only a region
    around the lower face changes; it is rendered per frame.
    """

    def __init__(self, image: np.ndarray, face: Face, flip: bool):
        h, w = image.shape[:2]
        fx = (lambda x: w - x) if flip else (lambda x: x)
        line = np.array(sorted((fx(x), y) for x, y in face.mouth_line))  # (11, 2) left to right
        corners = sorted((fx(x), y) for x, y in face.mouth_corners)
        jaw = sorted(fx(x) for x, _ in face.jaw_sides)
        chin = face.chin[1]
        self.image = image
        self.drop = MAX_DROP * face.iod  # pixels at opening 1
        mcx, hw = (corners[0][0] + corners[1][0]) / 2, (corners[1][0] - corners[0][0]) / 2
        jcx, jhw = (jaw[0] + jaw[1]) / 2, (jaw[1] - jaw[0]) / 2
        span = chin - line[:, 1].min()  # mouth line to chin
        x0, x1 = int(jcx - JAW_EDGE * jhw) - 2, int(np.ceil(jcx + JAW_EDGE * jhw)) + 3
        y0 = int(line[:, 1].min() - max(UPPER_BAND * span, 1.5 * hw)) - 2
        y1 = int(np.ceil(chin + NECK * span + self.drop)) + 3
        self.x0, self.x1, self.y0, self.y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
        xs = np.arange(self.x0, self.x1, dtype=np.float64)  # (RW,)
        s = np.arange(self.y0, self.y1, dtype=np.float64)[:, None]  # (RH, 1) source rows
        self.ym = np.interp(xs, line[:, 0], line[:, 1])  # (RW,) lip line
        u = np.clip((xs - mcx) / hw, -1, 1)
        self.lens = (1 - u * u) ** LENS_POWER  # (RW,) lip-gap profile, 0 at the corners
        wx = 1 - _smooth((np.abs(xs - jcx) / jhw - JAW_FLAT) / (JAW_EDGE - JAW_FLAT))
        t = _smooth((s - self.ym) / (LIP_BAND * span))
        lower = (self.lens * (1 - t) + wx * t) * (1 - _smooth((s - chin) / (NECK * span)))
        upper = -UPPER_LIP_RISE * self.lens * (1 - _smooth((self.ym - s) / (UPPER_BAND * span)))
        sag = sum(np.exp(-0.5 * (((xs - cx) / (0.35 * hw)) ** 2 + ((s - cy) / (0.5 * hw)) ** 2))
                  for cx, cy in corners)
        # (RH, RW) displacement per pixel of drop: source row s lands on s + drop * opening * P
        self.profile = np.where(s >= self.ym, lower, upper) + CORNER_SAG * sag * (1 - self.lens)
        self.first_lower = np.searchsorted(s[:, 0], self.ym)  # (RW,) first row below the line
        self.rows = s[:, 0]

    def render(self, opening: float) -> np.ndarray:
        """The portrait with its mouth opened by `opening`: (H, W, 3) uint8."""
        import cv2

        a = self.drop * float(opening)
        out = self.image.copy()
        if a < 0.05:
            return out
        rows = self.rows
        y_out = rows[:, None] + a * self.profile  # (RH, RW) forward map, monotone per side
        map_y = np.empty(y_out.shape, np.float32)
        cavity = np.zeros(y_out.shape, np.float32)
        depth = np.zeros(y_out.shape, np.float32)
        for j in range(y_out.shape[1]):  # invert each column
            col, k = y_out[:, j], self.first_lower[j]
            my = np.interp(rows, col, rows)
            top, bottom = col[k - 1], col[k]
            inside = (rows > top) & (rows < bottom)
            my[inside] = self.ym[j]
            map_y[:, j] = my
            if a * self.lens[j] > 0.5:
                cavity[:, j] = inside
                depth[:, j] = np.clip((rows - top) / (bottom - top), 0, 1)
        map_x = np.broadcast_to(np.arange(self.x0, self.x1, dtype=np.float32), map_y.shape)
        roi = cv2.remap(self.image, np.ascontiguousarray(map_x), map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        tongue = _smooth((depth - 0.55) / 0.45)[..., None]
        shade = (0.6 + 0.4 * np.abs(2 * depth - 1))[..., None]
        colour = (np.array(CAVITY) * (1 - tongue) + np.array(TONGUE) * tongue) * shade
        alpha = cv2.GaussianBlur(cavity, (0, 0), 0.7)[..., None]
        roi = roi * (1 - alpha) + colour * alpha
        out[self.y0:self.y1, self.x0:self.x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
        return out


def portrait(v: Variant) -> np.ndarray:
    """The video's person, mirrored and recoloured for this video: (H, W, 3) uint8."""
    img = v.face.image()
    if v.flip:
        img = np.ascontiguousarray(img[:, ::-1])
    lut = np.arange(256) / 255.0
    luts = [np.clip(255 * g * lut ** v.gamma + 0.5, 0, 255).astype(np.uint8) for g in v.gains]
    return np.stack([luts[c][img[..., c]] for c in range(3)], axis=-1)


def head_matrix(v: Variant, t: float, size: int, width: int) -> np.ndarray:
    """(2, 3) affine: portrait pixels -> frame pixels at time `t` (head motion, then framing)."""
    import cv2

    rot, tx, ty, scale, f1, f2, *ph = v.motion

    def wave_(k: int) -> float:  # smooth, zero-mean, in [-1, 1]
        return 0.6 * np.sin(2 * np.pi * f1 * t + ph[2 * k]) + 0.4 * np.sin(
            2 * np.pi * f2 * t + ph[2 * k + 1])

    nose = ((width - v.face.nose[0]) if v.flip else v.face.nose[0], v.face.nose[1])
    head = cv2.getRotationMatrix2D(nose, rot * wave_(0), 1 + scale * wave_(3))  # (2, 3)
    head[:, 2] += (tx * wave_(1), ty * wave_(2))
    cx = (width - v.crop_centre[0]) if v.flip else v.crop_centre[0]
    k = size / v.crop_side
    crop = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * v.crop_centre[1]]])
    return crop[:, :2] @ head + np.array([[0, 0, crop[0, 2]], [0, 0, crop[1, 2]]])


# ---- one video --------------------------------------------------------------------------------

def _wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """(n, channels) float32 -> 16-bit PCM WAV."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(audio.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _close_quietly(pipe) -> None:
    """Close a pipe whose reader is gone (flushing it would raise BrokenPipeError again)."""
    try:
        pipe.close()
    except OSError:
        pass  # the reader's error message is what gets reported


def make_video(out_dir: Path, cfg: DemoConfig, index: int) -> Path:
    """Write `<name>.opening.npy`, then `<name>.mp4` (returned)."""
    import cv2

    v = variant(cfg, index)
    rng = np.random.default_rng([cfg.seed, index, 1])
    n_audio = round(cfg.seconds * v.sample_rate)
    if speech_source(cfg.use_espeak) == "espeak-ng":
        speech = espeak_speech(n_audio, v.sample_rate, rng, voice=v.voice, speed=v.speed,
                               pitch=v.pitch, first_sentence=v.first_sentence)
    else:
        speech = synthetic_speech(n_audio, v.sample_rate, rng)
    speech = normalise(speech)
    n_frames = round(cfg.seconds * v.fps)
    opening = mouth_opening(speech, v.sample_rate, frame_times(n_frames, v.fps))  # (F,)
    gt = mouth_opening(speech, v.sample_rate, frame_times(round(cfg.seconds * FPS), FPS))
    atomic.write_npy(out_dir / f"{v.name}.opening.npy", gt)

    audio = speech[:, None] * (np.array([1.0, 0.8]) if v.channels == 2 else np.ones(1))
    aac = {**media.AAC, "ac": v.channels, "ar": v.sample_rate}
    image = portrait(v)
    warp = MouthWarp(image, v.face, v.flip)
    dst = out_dir / f"{v.name}.mp4"
    with tempfile.TemporaryDirectory() as tmp, atomic.atomic_path(dst) as tmp_mp4:
        wav = Path(tmp) / "speech.wav"
        wav.write_bytes(_wav_bytes(audio, v.sample_rate))
        frames_in = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24",
                                 s=f"{cfg.size}x{cfg.size}", r=v.fps)
        cmd = media.command(ffmpeg.output(frames_in["v:0"], ffmpeg.input(str(wav))["a:0"],
                                          str(tmp_mp4), **media.X264, **aac, **media.BITEXACT))
        with open(Path(tmp) / "stderr", "w+b") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
            # A stalled ffmpeg would block a pipe write forever: kill it at the timeout.
            fired = threading.Event()
            watchdog = threading.Timer(ENCODE_TIMEOUT, lambda: (fired.set(), proc.kill()))
            watchdog.daemon = True
            watchdog.start()
            try:
                for i in range(n_frames):
                    m = head_matrix(v, (i + 0.5) / v.fps, cfg.size, image.shape[1])
                    frame = cv2.warpAffine(warp.render(opening[i]), m, (cfg.size, cfg.size),
                                           flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REFLECT_101)
                    proc.stdin.write(frame.tobytes())
                proc.stdin.close()
            except OSError:  # BrokenPipeError: ffmpeg died (or was killed) early
                proc.kill()
                _close_quietly(proc.stdin)
            finally:
                code = proc.wait()
                watchdog.cancel()
            timed_out = fired.is_set()
            if code != 0:
                err.seek(0)
                message = err.read().decode(errors="replace").strip()[-4000:]
                if timed_out:
                    raise PrepError(f"ffmpeg encoding {dst} ran past {ENCODE_TIMEOUT:.0f} s "
                                    f"and was killed: {message}")
                raise PrepError(f"ffmpeg encoding {dst} failed (exit {code}): {message}")
    return dst


# ---- the dataset ------------------------------------------------------------------------------

def manifest_rows(cfg: DemoConfig) -> list[dict[str, str]]:
    """The demo manifest's rows: key, path, video_id, speaker_id and the pinned split."""
    names = [variant(cfg, i).name for i in range(cfg.n_videos)]
    splits = assign_splits(names)  # by video: see the module docstring
    return [{"key": name, "path": f"{name}.mp4", "video_id": name,
             "speaker_id": face_of(i).name, "split": splits[name]}
            for i, name in enumerate(names)]


def make_demo(work: Path, cfg: DemoConfig = DemoConfig(), workers: int = 2) -> Path:
    """Write the demo videos and their manifest under WORK/demo_src; return the manifest path.

    Re-running skips videos that are already there. A folder made with other settings
    (anything but `n_videos`) is refused rather than mixed. `workers` threads make
    videos concurrently (the output does not depend on it).
    """
    if cfg.n_videos < 1 or cfg.seconds < 0.5 or cfg.size < 64:
        raise PrepError(f"demo: need --videos >= 1, --seconds >= 0.5 and size >= 64, got {cfg}")
    out_dir = Path(work) / DEMO_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"settings": {k: val for k, val in dataclasses.asdict(cfg).items() if k != "n_videos"},
              "speech": speech_source(cfg.use_espeak), "version": DEMO_VERSION}
    if (out_dir / CONFIG_JSON).is_file():
        old = json.loads((out_dir / CONFIG_JSON).read_text())
        if old != record:
            raise PrepError(f"{out_dir} holds a demo made with {old}, not {record} (other "
                            f"settings or an older fd2talk): use another work directory, or "
                            f"delete {Path(work)} (the demo and everything made from it)")
    atomic.write_json(out_dir / CONFIG_JSON, record)  # first: a resumed run is checked too
    atomic.clean_tmp(out_dir)
    todo = [i for i in range(cfg.n_videos) if not all(
        (out_dir / f"{variant(cfg, i).name}{ext}").is_file() for ext in (".mp4", ".opening.npy"))]
    # Threads overlap one video's rendering (numpy/OpenCV release the GIL) with another's
    # encoding; each video is independent, so the bytes do not depend on the scheduling.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(lambda i: make_video(out_dir, cfg, i), todo))
    buf = io.StringIO()
    rows = manifest_rows(cfg)
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_bytes(out_dir / MANIFEST, buf.getvalue().encode())
    atomic.clean_tmp(out_dir)
    return out_dir / MANIFEST


def ground_truth_openings(work: Path) -> dict[str, np.ndarray]:
    """Video key -> its mouth opening at 25 fps ((F,) float32, frame k at (k + 0.5) / 25 s)."""
    out_dir = Path(work) / DEMO_DIR
    with open(out_dir / MANIFEST, newline="") as f:
        keys = [row["key"] for row in csv.DictReader(f)]
    return {k: np.load(out_dir / f"{k}.opening.npy") for k in keys}


# ---- checking it through the landmarker -------------------------------------------------------

def jaw_open_track(video: Path, face_model: str | Path | None = None) -> tuple[np.ndarray, ...]:
    """MediaPipe's reading of `video` (`landmarker.Landmarker`), three (F,) float32 arrays:
    jawOpen, the inner-lip gap in pixels (`landmarker.lip_gap`: landmarks 13 to 14) and the
    opening computed from the video's own audio at its frames; NaN where no face is found."""
    from fd2talk.pipeline.backends.landmarker import JAW_OPEN, Landmarker, lip_gap

    info = media.probe(video)
    frames = media.iter_frames(video, info.width, info.height, ENCODE_TIMEOUT)  # (H, W, 3) each
    with Landmarker(face_model, fps=info.fps) as lmk:
        track = lmk.track(frames)
    jaw = np.where(track.found, track.blendshapes[:, JAW_OPEN], np.nan).astype(np.float32)
    gap = np.where(track.found, lip_gap(track.landmarks), np.nan).astype(np.float32)
    audio = media.read_audio(video, ENCODE_TIMEOUT)
    return jaw, gap, mouth_opening(audio, SAMPLE_RATE, frame_times(len(track), info.fps))
