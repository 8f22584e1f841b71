"""The bundled demo dataset: talking portraits made offline (DESIGN.md section 6).

`make_demo(work, DemoConfig())` writes `WORK/demo_src/<name>.mp4` source videos
and `WORK/demo_src/manifest.csv` (key, path, video_id, speaker_id, split) for
`fd2talk-prep clip --manifest`. Each video shows one of two real portraits
(`portraits.py`; the manifest's speaker_id), mirrored or not, recoloured by a per-video
white balance and gamma, and reframed per video (`variants.py`), with

- speech from `speech.py`: espeak-ng (different sentences, voices, speeds per
  video) when it is on PATH, else a synthetic voice (glottal pulses through
  formant resonators, syllable-rate amplitude modulation, pauses between phrases);
- a mouth driven frame by frame by the speech envelope, a jaw drop that MediaPipe reads as
  `jawOpen`, and slow head motion (`face_motion.py`).

Measured with `tracks.jaw_open_track` over 60 videos of the astronaut (espeak-ng and
synthetic speech, 4-6 s): Pearson r(jawOpen, opening) = 0.92-0.98, jawOpen ~0.01-0.55;
on the default demo (seed 0, espeak-ng) r = 0.91-0.96 for the astronaut's five videos and
0.97-0.98 for Grace Hopper's five.

Two people cannot fill three splits by speaker, so the manifest pins each video's split
(`split` column: the by-video split of `split.assign_splits` over the video names, as the
shards had before splits by speaker existed; default demo: train demo000-003, 005-007, val
demo008, test demo004, demo009). The shard stage's `--split-by auto` then splits the demo
by video and records why (the pins put each person in several splits).

The ground-truth opening of each video, sampled at 25 fps (clip frame k at
time (k + 0.5) / 25), is saved as `<name>.opening.npy` so that tests and benchmarks can
check that a trained model's mouth channel follows the speech
(`tracks.ground_truth_openings`). Outputs are deterministic for a seed and written
atomically; a re-run skips finished videos.
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
from pathlib import Path

import ffmpeg
import numpy as np

from fd2talk.core import atomic, media
from fd2talk.core.schema import FPS
from fd2talk.core.skip import PrepError
from fd2talk.model.demo.face_motion import MouthWarp, frame_times, head_matrix, mouth_opening
from fd2talk.model.demo.portraits import face_of
from fd2talk.model.demo.speech import espeak_speech, normalise, speech_source, synthetic_speech
from fd2talk.model.demo.variants import DemoConfig, portrait, variant
from fd2talk.pipeline.stages.split import assign_splits

DEMO_DIR = "demo_src"
MANIFEST = "manifest.csv"
CONFIG_JSON = "demo.json"
# What the videos show; bumped when that changes, so an old demo folder is refused rather than
# mixed (1: the astronaut alone; 2: two people, `FACES`; 3: the manifest pins each split).
DEMO_VERSION = 3
ENCODE_TIMEOUT = 300.0  # seconds per video


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
        speech = espeak_speech(
            n_audio,
            v.sample_rate,
            rng,
            voice=v.voice,
            speed=v.speed,
            pitch=v.pitch,
            first_sentence=v.first_sentence,
        )
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
        frames_in = ffmpeg.input(
            "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{cfg.size}x{cfg.size}", r=v.fps
        )
        cmd = media.command(
            ffmpeg.output(
                frames_in["v:0"],
                ffmpeg.input(str(wav))["a:0"],
                str(tmp_mp4),
                **media.X264,
                **aac,
                **media.BITEXACT,
            )
        )
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
                    frame = cv2.warpAffine(
                        warp.render(opening[i]),
                        m,
                        (cfg.size, cfg.size),
                        flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT_101,
                    )
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
                    raise PrepError(
                        f"ffmpeg encoding {dst} ran past {ENCODE_TIMEOUT:.0f} s "
                        f"and was killed: {message}"
                    )
                raise PrepError(f"ffmpeg encoding {dst} failed (exit {code}): {message}")
    return dst


# ---- the dataset ------------------------------------------------------------------------------


def manifest_rows(cfg: DemoConfig) -> list[dict[str, str]]:
    """The demo manifest's rows: key, path, video_id, speaker_id and the pinned split."""
    names = [variant(cfg, i).name for i in range(cfg.n_videos)]
    splits = assign_splits(names)  # by video: see the module docstring
    return [
        {
            "key": name,
            "path": f"{name}.mp4",
            "video_id": name,
            "speaker_id": face_of(i).name,
            "split": splits[name],
        }
        for i, name in enumerate(names)
    ]


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
    record = {
        "settings": {k: val for k, val in dataclasses.asdict(cfg).items() if k != "n_videos"},
        "speech": speech_source(cfg.use_espeak),
        "version": DEMO_VERSION,
    }
    if (out_dir / CONFIG_JSON).is_file():
        old = json.loads((out_dir / CONFIG_JSON).read_text())
        if old != record:
            raise PrepError(
                f"{out_dir} holds a demo made with {old}, not {record} (other "
                f"settings or an older fd2talk): use another work directory, or "
                f"delete {Path(work)} (the demo and everything made from it)"
            )
    atomic.write_json(out_dir / CONFIG_JSON, record)  # first: a resumed run is checked too
    atomic.clean_tmp(out_dir)
    todo = [
        i
        for i in range(cfg.n_videos)
        if not all(
            (out_dir / f"{variant(cfg, i).name}{ext}").is_file() for ext in (".mp4", ".opening.npy")
        )
    ]
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
