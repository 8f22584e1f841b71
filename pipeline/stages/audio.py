"""Stage `audio`: crops -> per-frame audio features at 25 fps (DESIGN.md section 2).

Items are the complete crops (`crops/<key>.json`; its "frames" is the crop's video
frame count F). For each, the crop's audio is decoded once (16 kHz mono float32) and
checked against the video: if it lasts longer or shorter than F / FPS s by more than
`av_tolerance`, the crop is skipped (`av_length_mismatch`); otherwise it is padded or
trimmed to exactly F * 640 samples and encoded (see `audio_features`: `logmel`, the
offline default, or `wav2vec2` from a local model directory). Output per crop:
`audio/<key>.npy`, float16 (F, D), written atomically; F equals the crop's frame count.

`measure_peak_memory` runs this stage on one generated long crop in a fresh process
and reports its peak resident memory (the target: under 2 GB on a 10-minute input).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fd2talk.core import atomic, media
from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.core.skip import PrepError, Skip, SkipReason
from fd2talk.pipeline.backends.audio_features import (
    CHUNK_SECONDS,
    CONTEXT_SECONDS,
    LogMel,
    Wav2Vec2Features,
    Wav2Vec2Options,
    resolve_layer,
    wav2vec2_config,
    wav2vec2_source,
)
from fd2talk.pipeline.runner.work import Item
from fd2talk.pipeline.stages.crop import OUT_DIR as CROPS_DIR
from fd2talk.pipeline.stages.crop import crop_items

OUT_DIR = "audio"
BACKENDS = ("logmel", "wav2vec2")
FEATURE_DTYPE = np.float16  # schema: audio.npy float16 (F, D)
MEMORY_LIMIT_MB = 2048  # the most peak memory a 10-minute input may take


@dataclass(frozen=True)
class AudioConfig:
    backend: str = "logmel"  # logmel (offline default) or wav2vec2
    wav2vec2: str | None = None  # model directory (save_pretrained) or cached hub name
    layer: int = -1  # wav2vec2: -1 the last layer; k the output after the first k layers
    chunk_seconds: float = CHUNK_SECONDS  # wav2vec2: audio each window owns
    context_seconds: float = CONTEXT_SECONDS  # wav2vec2: extra audio each side of a window
    batch_size: int = 0  # wav2vec2: windows per forward (0: 1 on CPU, 4 on CUDA; the stage
    # records the resolved number, so a resume on another device is refused, not different)
    av_tolerance: float = 0.2  # seconds the audio may differ from F / FPS
    device: str = "auto"  # auto (CUDA when present), cpu or cuda
    timeout: float = 600.0  # seconds per ffmpeg call


def resolve_config(config: AudioConfig) -> AudioConfig:
    """Check the backend; for wav2vec2, resolve the model (flag, then $FD2TALK_WAV2VEC2)."""
    if config.backend not in BACKENDS:
        raise PrepError(f"--backend {config.backend!r}: choose one of {', '.join(BACKENDS)}")
    if config.chunk_seconds <= 0 or config.context_seconds < 0 or config.batch_size < 0:
        raise PrepError(
            f"need --chunk-seconds > 0, --context-seconds >= 0, --batch-size >= 0 "
            f"(got {config.chunk_seconds}, {config.context_seconds}, "
            f"{config.batch_size})"
        )
    if config.backend == "logmel":
        if config.wav2vec2:
            raise PrepError("--wav2vec2 is only used by --backend wav2vec2")
        return config
    return dataclasses.replace(config, wav2vec2=wav2vec2_source(config.wav2vec2))


def default_batch_size(device: str) -> int:
    """wav2vec2 windows per forward when --batch-size is 0: 4 on CUDA, 1 on the CPU."""
    from fd2talk.core.device import resolve_device

    return 4 if resolve_device(device) == "cuda" else 1


def make_encoder(config: AudioConfig) -> LogMel | Wav2Vec2Features:
    """The feature encoder of `config` (loads the wav2vec2 weights)."""
    config = resolve_config(config)
    if config.backend == "logmel":
        return LogMel()
    options = Wav2Vec2Options(
        layer=config.layer,
        chunk_seconds=config.chunk_seconds,
        context_seconds=config.context_seconds,
        batch_size=config.batch_size,
        device=config.device,
    )
    return Wav2Vec2Features(config.wav2vec2, options)


def feature_info(config: AudioConfig) -> dict:
    """What the features are, for shard json/stats: backend, dim, fps (+ model, layer).

    Reads only the model's config.json, not its weights.
    """
    config = resolve_config(config)
    if config.backend == "logmel":
        return LogMel().info()
    w2v = wav2vec2_config(config.wav2vec2)
    return {
        "backend": "wav2vec2",
        "dim": int(w2v.hidden_size),
        "fps": FPS,
        "model": config.wav2vec2,
        "layer": resolve_layer(config.layer, w2v.num_hidden_layers),
        "chunk_seconds": config.chunk_seconds,
        "context_seconds": config.context_seconds,
    }


def decode_audio(path: Path, timeout: float) -> np.ndarray:
    """The crop's audio, (S,) float32 16 kHz mono; a bad file raises the probe's specific Skip.

    The crop stage writes the audio beside the mp4 as exact-length PCM (`<key>.wav`);
    reading that starts no decoder (ffmpeg's start-up alone costs more than the log-mel).
    Without it (crops from older runs), ffmpeg decodes the mp4's AAC track.
    """
    wav = Path(path).with_suffix(".wav")
    if wav.is_file():
        return media.read_wav(wav)
    try:
        return media.read_audio(path, timeout)
    except Skip:
        # Only on failure: let ffprobe name the reason (no audio stream, empty, truncated...).
        media.probe(path, need_audio=True, timeout=timeout)
        raise


class AudioStage:
    """Per-frame audio features of every complete crop (one item per crops/<key>.json)."""

    name = "audio"
    out_dir = OUT_DIR

    def __init__(self, config: AudioConfig = AudioConfig()):
        config = resolve_config(config)
        if config.backend == "wav2vec2":
            wav2vec2_config(config.wav2vec2)  # a missing model fails now, not per clip
            if config.batch_size == 0:  # windows per forward change the float results
                config = dataclasses.replace(config, batch_size=default_batch_size(config.device))
        self.config = config
        self._encoder: LogMel | Wav2Vec2Features | None = None

    def items(self, work: Path) -> list[Item]:
        """The crops with speech (video-only crops, manifest `audio: no`, have none)."""
        return [it for it in crop_items(work, "audio") if it.payload.get("audio") is not False]

    def setup(self) -> None:
        if self._encoder is None:
            self._encoder = make_encoder(self.config)

    def __getstate__(self) -> dict:  # worker processes load their own encoder
        return {"config": self.config, "_encoder": None}

    def process(self, item: Item, work: Path) -> list[str]:
        cfg = self.config
        self.setup()
        n_frames = int(item.payload["frames"])
        samples = decode_audio(Path(work) / CROPS_DIR / f"{item.key}.mp4", cfg.timeout)
        audio_s, video_s = len(samples) / SAMPLE_RATE, n_frames / FPS
        if abs(audio_s - video_s) > cfg.av_tolerance:
            raise Skip(
                SkipReason.AV_MISMATCH,
                f"audio lasts {audio_s:.3f} s, video {video_s:.3f} s ({n_frames} frames; "
                f"tolerance {cfg.av_tolerance} s)",
            )
        feats = self._encoder.features(samples, n_frames)  # (F, D) float32
        with np.errstate(over="ignore"):  # an overflow is checked (and skipped) just below
            out = feats.astype(FEATURE_DTYPE)
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).any(1).sum())
            raise Skip(
                SkipReason.NON_FINITE,
                f"{cfg.backend} features of {bad} of {len(out)} frames are inf/NaN in "
                f"float16 (largest finite |value| before the cast "
                f"{float(np.abs(feats[np.isfinite(feats)]).max(initial=0.0)):.3g})",
            )
        atomic.write_npy(Path(work) / OUT_DIR / f"{item.key}.npy", out)
        return [f"{OUT_DIR}/{item.key}.npy"]


# ----------------------------------------------------------------------------- peak memory

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from fd2talk.pipeline.stages.audio import AudioConfig, AudioStage
from fd2talk.pipeline.runner.work import Item

def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

cfg, work, key, frames = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
stage = AudioStage(AudioConfig(**cfg))
stage.setup()
ready = rss('VmRSS')
t0 = time.perf_counter()
stage.process(Item(key, {'frames': frames}), work)
print(json.dumps({'peak_mb': rss('VmHWM'), 'after_setup_mb': ready,
                  'process_seconds': time.perf_counter() - t0}))
"""


def make_long_crop(work: Path, key: str, seconds: float, timeout: float = 600.0) -> int:
    """Write crops/<key>.mp4 (a small still video + pink-noise AAC audio) and its json; return F.

    The audio stage reads only the audio, so the video is tiny (32x32) to make this quick.
    """
    frames = round(seconds * FPS)
    mp4 = Path(work) / CROPS_DIR / f"{key}.mp4"
    mp4.parent.mkdir(parents=True, exist_ok=True)
    import ffmpeg

    video = ffmpeg.input(f"color=c=gray:size=32x32:rate={FPS}", format="lavfi")
    noise = ffmpeg.input(
        f"anoisesrc=color=pink:amplitude=0.2:seed=1:sample_rate={SAMPLE_RATE}", format="lavfi"
    )
    cmd = media.command(
        ffmpeg.output(
            video,
            noise,
            str(mp4),
            t=f"{frames / FPS:.6f}",
            preset="ultrafast",
            pix_fmt="yuv420p",
            **{"frames:v": frames, "c:v": "libx264"},
            **media.AAC,
        )
    )
    media.run_tool(cmd, timeout, "ffmpeg making a long test crop")
    atomic.write_json(mp4.with_suffix(".json"), {"key": key, "frames": frames, "fps": FPS})
    return frames


def measure_peak_memory(
    config: AudioConfig, seconds: float = 600.0, work: Path | None = None, timeout: float = 1200.0
) -> dict:
    """Peak resident memory (MB) of the audio stage on one `seconds`-long crop, in a fresh process.

    The child process loads the encoder, then decodes, encodes and writes one crop made
    by `make_long_crop`; it reports its own high-water mark (`peak_mb`: /proc VmHWM, i.e.
    ru_maxrss; shared library pages included: importing torch alone is ~0.5 GB here) and its
    resident size after loading the model (`after_setup_mb`; safetensors weights are mapped
    lazily, so they count once touched). ffmpeg runs in its own process (~60 MB).
    """
    config = resolve_config(config)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        key = "memory_probe"
        frames = make_long_crop(Path(tmp), key, seconds)
        cmd = [
            sys.executable,
            "-c",
            _CHILD,
            json.dumps(dataclasses.asdict(config)),
            tmp,
            key,
            str(frames),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"peak-memory child failed:\n{proc.stderr[-4000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["frames_written"] = int(np.load(Path(tmp) / OUT_DIR / f"{key}.npy").shape[0])
    out.update(seconds=seconds, frames=frames, backend=config.backend)
    return out
