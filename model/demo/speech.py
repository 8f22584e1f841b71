"""Speech for the demo videos, made offline (the bundled demo dataset, DESIGN.md section 6).

Two sources, both deterministic for a given `numpy.random.Generator`:

- `espeak_speech`: Harvard sentences (`SENTENCES`) spoken by espeak-ng with a
  given voice, speed and pitch, separated by random pauses, resampled to the
  requested rate;
- `synthetic_speech`: a voiced signal with speech-like structure when espeak-ng
  is absent (glottal pulses through three formant resonators per syllable,
  syllable-rate amplitude modulation, pauses between phrases).

`speech_source` says which one a demo uses; `normalise` brings either to a
common level (`SPEECH_RMS`) before the demo derives the mouth opening from it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from fd2talk.core.skip import PrepError

ESPEAK_TIMEOUT = 30.0  # seconds per sentence
SPEECH_RMS = 0.1  # speech is scaled to this RMS (about -20 dBFS)

SENTENCES = (  # Harvard sentences (IEEE 1969)
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
)
VOICES = ("en-us+f3", "en-gb+f2", "en-us+f4", "en+f5", "en-gb-x-rp+f1", "en-us+f2")
VOWELS = (
    (730, 1090, 2440),
    (530, 1840, 2480),
    (270, 2290, 3010),
    (570, 840, 2410),
    (300, 870, 2240),
    (660, 1720, 2410),
)  # formants F1-F3 (Hz) of a, e, i, o, u, ae
FORMANT_BANDWIDTHS = (80, 100, 140)  # Hz, of F1-F3


def speech_source(use_espeak: bool) -> str:
    """The voice of the demo: espeak-ng when asked for and on PATH, else the synthetic one."""
    return "espeak-ng" if use_espeak and shutil.which("espeak-ng") else "synthetic"


# ---- espeak-ng ------------------------------------------------------------------------------


def espeak(text: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    """One sentence from espeak-ng -> (n,) float32 mono at `sample_rate`."""
    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise PrepError("espeak-ng not found: `apt-get install -y espeak-ng`, or use --no-espeak")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=ESPEAK_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise PrepError(f"espeak-ng ran past {ESPEAK_TIMEOUT:.0f} s: {cmd}") from None
        if proc.returncode != 0 or not wav.is_file():
            raise PrepError(f"espeak-ng failed ({cmd}): {proc.stderr.decode(errors='replace')}")
        with wave.open(str(wav)) as w:
            rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    g = np.gcd(rate, sample_rate)
    return resample_poly(x, sample_rate // g, rate // g).astype(np.float32)


def espeak_speech(
    n: int,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    voice: str,
    speed: int,
    pitch: int,
    first_sentence: int,
) -> np.ndarray:
    """`SENTENCES` from `first_sentence` on, with pauses, until `n` samples are filled: (n,) float32.

    `speed` in words per minute, `pitch` 0..99 (espeak-ng's `-s` and `-p`).
    """
    parts, total, k = [], 0, first_sentence
    while total < n:
        s = espeak(SENTENCES[k % len(SENTENCES)], voice, speed, pitch, sample_rate)
        pause = np.zeros(int(rng.uniform(0.15, 0.45) * sample_rate), np.float32)
        parts += [s, pause]
        total += len(s) + len(pause)
        k += 1
    return np.concatenate(parts)[:n]


# ---- the synthetic voice --------------------------------------------------------------------


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    """Two-pole resonator at `freq` Hz with bandwidth `bw` Hz over (n,) `x`."""
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2 * r * np.cos(2 * np.pi * freq / sr), r * r]
    return lfilter([sum(a)], a, x)  # unit gain at DC


def synthetic_speech(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced signal with speech-like structure: (n,) float32.

    Glottal pulses (f0 110-220 Hz, slow intonation) with spectral tilt, filtered per
    syllable through three formant resonators (a vowel table), shaped by raised-cosine
    syllable envelopes (~4-6 Hz) in phrases of 3-8 syllables separated by pauses, with
    short noise bursts for consonant onsets.
    """
    from scipy.signal import lfilter

    sr = sample_rate
    t = np.arange(n) / sr
    f0 = rng.uniform(110, 220) * (
        1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi))
    )
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # 1 at each glottal closure
    source = lfilter([1.0], [1.0, -1.9, 0.9025], pulses)  # glottal shape, -12 dB/octave
    source = np.diff(source, prepend=0.0)  # lip radiation, +6 dB/octave
    out = np.zeros(n)
    pos = int(rng.uniform(0.1, 0.3) * sr)
    while pos < n:
        for _ in range(int(rng.integers(3, 9))):  # one phrase
            length = int(rng.uniform(0.14, 0.26) * sr)
            seg = slice(pos, min(pos + length, n))
            m = seg.stop - seg.start
            if m <= 0:
                break
            y = source[seg]
            vowel = VOWELS[int(rng.integers(len(VOWELS)))]
            for f, bw in zip(vowel, FORMANT_BANDWIDTHS, strict=True):
                y = _resonator(y, f * rng.uniform(0.92, 1.08), bw, sr)
            env = np.sin(np.pi * np.arange(m) / length) ** 3 * rng.uniform(0.4, 1.0)
            burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.015 * sr)) * 0.3
            out[seg] += y * env / (np.std(y) + 1e-9) + np.diff(burst, prepend=0.0)
            pos += length
        pos += int(rng.uniform(0.2, 0.6) * sr)  # pause between phrases
    out += rng.standard_normal(n) * 1e-3  # room noise floor
    return out.astype(np.float32)


def normalise(x: np.ndarray) -> np.ndarray:
    """Scale (n,) `x` to `SPEECH_RMS` over its louder half of samples, peaks below 0.95: float32."""
    loud = np.abs(x) >= np.median(np.abs(x))
    x = x * (SPEECH_RMS / (np.sqrt(np.mean(x[loud] ** 2)) + 1e-9))
    return (x * min(1.0, 0.95 / (np.abs(x).max() + 1e-9))).astype(np.float32)
