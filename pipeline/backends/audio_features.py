"""Audio features at 25 fps, one row per video frame (DESIGN.md sections 1, 2 and 6).

Two encoders behind one interface, `encoder.features(samples, n_frames) -> (n_frames, D)`:

- `LogMel` (the offline default): an 80-band log-mel spectrogram with hop 640 samples
  (one 40 ms video frame at 16 kHz) and an 80 ms Hann window centred on each frame.
- `Wav2Vec2Features` (the paper's condition c, section 3.2): hidden states of a
  wav2vec 2.0 model loaded with transformers' `from_pretrained` from a local directory
  (or a name already in the Hugging Face cache; we never download). Input normalised
  like `Wav2Vec2FeatureExtractor` (zero mean, unit variance); the 50 Hz hidden states
  are linearly interpolated to the centres of the 25 fps frames (as SadTalker/FaceFormer
  resample to the video rate, but at exact sample positions). Long audio runs in
  windows of `chunk_seconds` plus `context_seconds` on each side, the context dropped
  when stitching (the chunk/stride scheme of transformers' ASR pipeline), so memory
  is bounded by the window, not by the clip; equal-length windows run in batches.

Both fit the audio to exactly `n_frames * 640` samples first (zero padding or trimming
at the end), so the feature count always equals the video's frame count.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fd2talk.core.device import resolve_device
from fd2talk.core.schema import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from fd2talk.core.skip import PrepError

# log-mel: the window spans two video frames (80 ms), centred on the frame's centre.
MEL_BANDS = 80
MEL_WINDOW = 2 * SAMPLES_PER_FRAME  # 1280 samples = n_fft
MEL_FMIN = 55.0  # Hz, as Wav2Lip's mel front end
MEL_FMAX = 7600.0  # Hz
LOG_FLOOR = 1e-10  # power floor before the log (-100 dB)

# wav2vec 2.0
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
CHUNK_SECONDS = 15.0  # audio each window owns
CONTEXT_SECONDS = 2.5  # extra audio on each side of a window, dropped when stitching
WAV2VEC2_ENV = "FD2TALK_WAV2VEC2"
WAV2VEC2_HINT = (
    "pass --wav2vec2 DIR (or set FD2TALK_WAV2VEC2) with a model directory saved by "
    '`save_pretrained`, e.g. on a machine with network: python -c "from transformers import '
    "Wav2Vec2Model as M; M.from_pretrained('facebook/wav2vec2-base-960h')"
    ".save_pretrained('wav2vec2-base-960h')\" (save its Wav2Vec2FeatureExtractor there too, "
    "so its do_normalize setting is used)"
)


def fit_length(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """Pad with zeros or trim at the end to exactly n_frames * 640 samples: (n_frames * 640,)."""
    n = n_frames * SAMPLES_PER_FRAME
    samples = np.asarray(samples, np.float32).reshape(-1)
    if len(samples) >= n:
        return samples[:n]
    return np.concatenate([samples, np.zeros(n - len(samples), np.float32)])


# ----------------------------------------------------------------------------- log-mel


def mel_filterbank(
    n_mels: int = MEL_BANDS,
    n_fft: int = MEL_WINDOW,
    sr: int = SAMPLE_RATE,
    fmin: float = MEL_FMIN,
    fmax: float = MEL_FMAX,
) -> np.ndarray:
    """Triangular, area-normalised (Slaney) mel filters on Slaney's mel scale (librosa's
    default): (n_mels, n_fft // 2 + 1) float32, from transformers' `mel_filter_bank`."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=fmin,
        max_frequency=fmax,
        sampling_rate=sr,
        norm="slaney",
        mel_scale="slaney",
    )  # (bins, n_mels) float64
    return np.ascontiguousarray(bank.T, np.float32)


class LogMel:
    """Log-mel spectrogram aligned to 25 fps: row i describes samples [640 i - 320, 640 i + 960).

    Window: 1280-sample periodic Hann (80 ms), n_fft 1280, hop 640; 80 Slaney mel bands
    55-7600 Hz; natural log of the band power with a floor of 1e-10. Memory: a few copies
    of the audio (about 0.4 GB for 10 minutes).
    """

    name = "logmel"
    # frames per block: bounds the (block, 1280) framing buffers
    BLOCK = 4096

    def __init__(self, n_mels: int = MEL_BANDS):
        self.dim = n_mels
        self.filters = mel_filterbank(n_mels).T.copy()  # (641, n_mels)
        n = np.arange(MEL_WINDOW)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / MEL_WINDOW)).astype(np.float32)

    def info(self) -> dict:
        return {
            "backend": self.name,
            "dim": self.dim,
            "fps": FPS,
            "n_fft": MEL_WINDOW,
            "hop": SAMPLES_PER_FRAME,
            "window": "hann",
            "fmin": MEL_FMIN,
            "fmax": MEL_FMAX,
            "log": "ln(max(power, 1e-10))",
        }

    def features(self, samples: np.ndarray, n_frames: int) -> np.ndarray:
        """(S,) float32 mono 16 kHz -> (n_frames, 80) float32."""
        x = fit_length(samples, n_frames)
        pad = (MEL_WINDOW - SAMPLES_PER_FRAME) // 2  # centre each window on its frame
        x = np.concatenate([np.zeros(pad, np.float32), x, np.zeros(pad, np.float32)])
        frames = np.lib.stride_tricks.sliding_window_view(x, MEL_WINDOW)[::SAMPLES_PER_FRAME]
        out = np.empty((n_frames, self.dim), np.float32)
        for a in range(0, n_frames, self.BLOCK):
            block = frames[a : a + self.BLOCK] * self.window  # (B, 1280)
            spec = np.fft.rfft(block, axis=1)  # (B, 641)
            power = (spec.real**2 + spec.imag**2).astype(np.float32)
            out[a : a + len(block)] = np.log(np.maximum(power @ self.filters, LOG_FLOOR))
        return out


# ----------------------------------------------------------------------------- wav2vec 2.0


def _set_offline() -> None:
    """Never wait on a model hub (must run before huggingface_hub is imported to count)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def wav2vec2_source(flag: str | None) -> str:
    """The model to load: `flag`, else $FD2TALK_WAV2VEC2; an existing directory is made absolute."""
    src = flag or os.environ.get(WAV2VEC2_ENV)
    if not src:
        raise PrepError(f"the wav2vec2 backend needs a model: {WAV2VEC2_HINT}")
    path = Path(src).expanduser()
    return str(path.resolve()) if path.is_dir() else src


def _check_source(src: str) -> None:
    path = Path(src).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise PrepError(f"wav2vec2 model directory {path} has no config.json: {WAV2VEC2_HINT}")
    if not path.exists() and (
        path.is_absolute() or src.startswith((".", "~")) or src.count("/") > 1
    ):
        raise PrepError(f"wav2vec2 model directory {path} does not exist: {WAV2VEC2_HINT}")


def _missing(src: str, err: Exception) -> PrepError:
    return PrepError(
        f"cannot load wav2vec2 model {src!r}: it is neither a model directory nor in the "
        f"Hugging Face cache, and nothing is downloaded ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}); {WAV2VEC2_HINT}"
    )


def wav2vec2_config(src: str):
    """The model's `Wav2Vec2Config`, read from the directory/cache only (cheap: no weights)."""
    _set_offline()
    _check_source(src)
    from transformers import Wav2Vec2Config

    try:
        return Wav2Vec2Config.from_pretrained(src, local_files_only=True)
    except OSError as e:
        raise _missing(src, e) from None


def resolve_layer(layer: int, num_layers: int) -> int:
    """Layer index in [0, num_layers]: -1 is the last, -2 the one before; 0 is the encoder input."""
    k = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= k <= num_layers:
        raise PrepError(
            f"--layer {layer}: the model has {num_layers} transformer layers "
            f"(use 0..{num_layers}, or -1 for the last)"
        )
    return k


def conv_geometry(config) -> tuple[int, int]:
    """(receptive field, stride) of the convolutional feature encoder in samples: (400, 320)."""
    field, stride = 1, 1
    for k, s in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (k - 1) * stride
        stride *= s
    return field, stride


def plan_windows(n_frames: int, chunk: int, context: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Split frames [0, n) into windows of one width: (width, [(window_start, own_start, own_end)]).

    Each window owns `ceil(n / k)` frames (k = ceil(n / chunk) windows, so no window is
    mostly padding) and sees `context` more frames on each side; at the ends of the
    audio the window shifts inwards instead, so every window has the same width and
    windows batch without padding. Frames of a window outside [own_start, own_end) are
    context only. A clip no longer than one window is one window.
    """
    k = max(1, math.ceil(n_frames / max(1, chunk)))
    own = math.ceil(n_frames / k)
    width = own + 2 * context
    if width >= n_frames:
        return n_frames, [(0, 0, n_frames)]
    plan = []
    for a in range(0, n_frames, own):
        b = min(a + own, n_frames)
        start = min(max(a - context, 0), n_frames - width)
        plan.append((start, a, b))
    return width, plan


@dataclass(frozen=True)
class Wav2Vec2Options:
    layer: int = -1  # -1: last_hidden_state; k: the output after the first k layers
    chunk_seconds: float = CHUNK_SECONDS
    context_seconds: float = CONTEXT_SECONDS
    batch_size: int = 0  # windows per forward; 0: 1 on the CPU, 4 on CUDA
    device: str = "auto"


class Wav2Vec2Features:
    """wav2vec 2.0 hidden states resampled to 25 fps: (n_frames, hidden_size) float32.

    Layer k (0..L) is `hidden_states[k]` of the full model (see `keep_layers`: the later
    layers are dropped, saving their compute); -1 (default) is the last layer.
    """

    name = "wav2vec2"

    def __init__(self, src: str, options: Wav2Vec2Options = Wav2Vec2Options()):
        import torch

        self.src = src
        self.options = options
        self.device = torch.device(resolve_device(options.device))
        config = wav2vec2_config(src)
        self.layer = resolve_layer(options.layer, config.num_hidden_layers)
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar per worker
        try:
            model = Wav2Vec2Model.from_pretrained(src, local_files_only=True, dtype=torch.float32)
        except OSError as e:
            raise _missing(src, e) from None
        try:
            extractor = Wav2Vec2FeatureExtractor.from_pretrained(src, local_files_only=True)
        except OSError:  # a model saved without its preprocessor_config.json: the defaults
            extractor = Wav2Vec2FeatureExtractor()
        if extractor.sampling_rate != SAMPLE_RATE:
            raise PrepError(
                f"wav2vec2 model {src} expects {extractor.sampling_rate} Hz audio; "
                f"the pipeline has {SAMPLE_RATE} Hz"
            )
        self.normalize = bool(extractor.do_normalize)
        keep_layers(model, self.layer)
        self.model = model.eval().to(self.device)
        self.dim = int(config.hidden_size)
        self.field, self.stride = conv_geometry(config)
        self.batch_size = options.batch_size or (4 if self.device.type == "cuda" else 1)

    def info(self) -> dict:
        o = self.options
        return {
            "backend": self.name,
            "dim": self.dim,
            "fps": FPS,
            "model": self.src,
            "layer": self.layer,
            "normalize": self.normalize,
            "chunk_seconds": o.chunk_seconds,
            "context_seconds": o.context_seconds,
        }

    def normalise(self, samples: np.ndarray, n_frames: int) -> np.ndarray:
        """Fit to n_frames * 640 samples, then zero mean and unit variance over the real ones.

        The zero padding stays zero (the mean after normalising). One allocation: a
        10-minute clip is 38 MB a copy, and this runs beside the model's peak.
        """
        samples = np.asarray(samples, np.float32).reshape(-1)
        x = np.zeros(n_frames * SAMPLES_PER_FRAME, np.float32)
        real = x[: min(len(samples), len(x))]
        real[:] = samples[: len(real)]
        if self.normalize and len(real):
            mean, var = real.mean(dtype=np.float64), real.var(dtype=np.float64)
            real -= np.float32(mean)
            real /= np.float32(np.sqrt(var + NORM_EPS))
        return x

    def positions(self, n_frames: int):
        """Fractional hidden-state index of each video frame's centre in a window: (n_frames,)."""
        import torch

        centres = torch.arange(n_frames, dtype=torch.float64) * SAMPLES_PER_FRAME
        centres += (SAMPLES_PER_FRAME - 1) / 2 - (self.field - 1) / 2
        return (centres / self.stride).float()

    def features(self, samples: np.ndarray, n_frames: int) -> np.ndarray:
        """(S,) float32 mono 16 kHz -> (n_frames, hidden_size) float32."""
        import torch

        out = np.empty((n_frames, self.dim), np.float32)
        if n_frames == 0:
            return out
        x = torch.from_numpy(self.normalise(samples, n_frames))
        o = self.options
        width, plan = plan_windows(
            n_frames, round(o.chunk_seconds * FPS), round(o.context_seconds * FPS)
        )
        pos = self.positions(width).to(self.device)  # (width,)
        spf = SAMPLES_PER_FRAME
        with torch.inference_mode():
            for b in range(0, len(plan), self.batch_size):
                batch = plan[b : b + self.batch_size]
                inputs = torch.stack([x[s * spf : (s + width) * spf] for s, _, _ in batch])
                hidden = self.model(inputs.to(self.device)).last_hidden_state  # (B, T, D)
                rows = _interpolate(hidden, pos).float().cpu().numpy()  # (B, width, D)
                for (s, a, e), r in zip(batch, rows, strict=True):
                    out[a:e] = r[a - s : e - s]
        return out


def keep_layers(model, k: int) -> None:
    """Cut a Wav2Vec2Model in place so `last_hidden_state` is `hidden_states[k]` of the full one.

    Post-norm models (base; `do_stable_layer_norm=False`) normalise before the layers, so
    the first k layers give hidden_states[k]. Pre-norm ones (large-lv60, XLS-R;
    `do_stable_layer_norm=True`) apply a final LayerNorm after the last layer: it is kept
    only for k = L (the model's last_hidden_state) and removed for k < L, where
    hidden_states[k] is the raw output of layer k. (transformers 5 reports the final
    layer's pre-norm output as hidden_states[L]; L here means last_hidden_state, as in
    transformers 4.) Dropping layers keeps the memory of a k-layer model.
    """
    from torch import nn

    encoder = model.encoder
    n = len(encoder.layers)
    encoder.layers = encoder.layers[:k]
    if model.config.do_stable_layer_norm and k < n:
        encoder.layer_norm = nn.Identity()


def _interpolate(hidden, pos):
    """Linear interpolation along time: (B, T, D) at fractional indices (W,) -> (B, W, D)."""
    import torch

    t = hidden.shape[1]
    p = pos.clamp(0, t - 1)
    i0 = p.floor().long().clamp(max=t - 1)
    i1 = (i0 + 1).clamp(max=t - 1)
    w = (p - i0).to(hidden.dtype)[None, :, None]
    return torch.lerp(hidden[:, i0], hidden[:, i1], w)


def save_random_wav2vec2(path: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a randomly initialised Wav2Vec2Model with `save_pretrained` (tests, bench).

    `tiny`: 2 layers, hidden 64 (fast, for tests); `tiny-stable`: the same with
    `do_stable_layer_norm=True`; `base`: 12 layers, hidden 768 (the
    shape of facebook/wav2vec2-base, for speed and memory measurements).
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    presets = {
        "tiny": dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ),
        # the tiny shape with pre-norm layers and a final LayerNorm (as large-lv60, XLS-R)
        "tiny-stable": dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            do_stable_layer_norm=True,
            feat_extract_norm="layer",
        ),
        "base": {},  # Wav2Vec2Config's defaults are the base model
    }
    if size not in presets:
        raise PrepError(f"size {size!r}: one of {sorted(presets)}")
    torch.manual_seed(seed)
    model = Wav2Vec2Model(Wav2Vec2Config(**presets[size])).eval()
    model.save_pretrained(path)
    return Path(path)
