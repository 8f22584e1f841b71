"""The metrics of `fd2talk-eval`, as math on arrays (the networks that feed some of them live
in `nets.py`, the scoring of a video in `scoring.py`). Each follows a published protocol; where the
paper leaves a choice open, the choice is written here and in docs/evaluation.md.

- PSNR and SSIM: RGB in [0, 1], `data_range=1`; SSIM with Wang et al.'s settings (Gaussian
  window 11, sigma 1.5, K1 0.01, K2 0.03, population covariance: scikit-image's
  `structural_similarity` with `gaussian_weights=True, use_sample_covariance=False`), the
  three channels averaged. Per frame, then the mean per video, then the mean over videos.
- FID: the Frechet distance of two Gaussians fitted to Inception pool features (pytorch-fid's
  formula; SciPy's `sqrtm` without the deprecated `disp`).
- LSE-D / LSE-C / AV offset: syncnet_python's `calc_pdist` and `evaluate` on per-window
  embeddings: for every video window the distances to the audio windows shifted by
  -vshift..vshift, averaged over windows; LSE-D = their minimum, LSE-C = their median minus
  the minimum, the offset = vshift minus the index of the minimum.
- Beat align: Bailando's score adapted to heads: the head's speed (frame-to-frame change of
  the motion features) smoothed with a Gaussian (sigma 5 frames, Bailando's), its local minima
  are the motion beats; the speech's onsets (`speech_onsets`) are the audio beats; the score
  is the mean over audio beats of exp(-d^2 / (2 sigma^2)), d the distance in frames to the
  nearest motion beat, sigma^2 = 9.
- Diversity: the standard deviation over frames of each head-motion feature (yaw, pitch,
  roll in degrees), averaged over the features.
- LMD: the mean distance between generated and ground-truth mouth landmarks, over the frames
  where both have a face, divided by the ground truth's distance between the outer eye
  corners (so it is in units of that distance, whatever the resolution).
- Mouth sync: Pearson r of the generated mouth opening (MediaPipe's jawOpen, read back from
  the video) with the ground truth's, and with the speech envelope (RMS per 40 ms frame).
"""

from __future__ import annotations

import warnings

import numpy as np

from fd2talk.core.schema import FPS, SAMPLE_RATE

# MediaPipe face mesh lip landmarks (FACEMESH_LIPS: outer and inner contours, 40 points)
LIPS = (
    61,
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    291,
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,
    78,
    95,
    88,
    178,
    87,
    14,
    317,
    402,
    318,
    324,
    308,
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,
)
EYE_CORNERS = (33, 263)  # the outer corners of the right and left eye

BEAT_SIGMA2 = 9.0  # Bailando: frames^2
SPEED_SMOOTH = 5.0  # Bailando's gaussian_filter sigma on the kinetic speed (frames)


def _unit(frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
    return frames.astype(np.float64) / 255.0


PSNR_CAP = 100.0  # dB for an identical frame (MSE 0), so a video's mean stays finite


def psnr(gen: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(F,) PSNR in dB of uint8 frames (F, H, W, 3) in [0, 1] with data_range 1; an identical
    frame scores PSNR_CAP (an infinite one would drop its video from the mean)."""
    if gen.shape != ref.shape:
        raise ValueError(f"frames differ in shape: {gen.shape} vs {ref.shape}")
    mse = np.array([((_unit(g) - _unit(r)) ** 2).mean() for g, r in zip(gen, ref, strict=True)])
    with np.errstate(divide="ignore"):
        return np.minimum(10 * np.log10(1.0 / mse), PSNR_CAP)


def ssim(gen: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(F,) SSIM of uint8 frames (F, H, W, 3), Wang et al.'s settings (module doc)."""
    from skimage.metrics import structural_similarity

    if gen.shape != ref.shape:
        raise ValueError(f"frames differ in shape: {gen.shape} vs {ref.shape}")
    return np.array(
        [
            structural_similarity(
                a,
                b,
                data_range=1.0,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for a, b in zip(_unit(gen), _unit(ref), strict=True)
        ]
    )


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), as pytorch-fid fits them."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError(f"FID needs at least 2 frames per set, got {len(features)}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (pytorch-fid's, with its fallback of
    eps on the diagonals when the product is singular)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # fewer frames than dimensions: singular, handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of features (N, D)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def sync_distances(video: np.ndarray, audio: np.ndarray, vshift: int = 15) -> np.ndarray:
    """(31, W) distances: for each window i of the video embeddings (W, D) and each shift
    s = -vshift..vshift, ||video[i] - audio[i + s]|| (syncnet_python's `calc_pdist`: the audio
    padded with zeros at both ends; F.pairwise_distance's eps of 1e-6 added to the
    difference)."""
    video, audio = np.asarray(video, np.float64), np.asarray(audio, np.float64)
    n = min(len(video), len(audio))
    video, audio = video[:n], audio[:n]
    padded = np.pad(audio, ((vshift, vshift), (0, 0)))
    shifts = np.arange(2 * vshift + 1)
    idx = np.arange(n)[None, :] + shifts[:, None]  # (31, W)
    return np.linalg.norm(video[None] - padded[idx] + 1e-6, axis=-1)


def lse(video: np.ndarray, audio: np.ndarray, vshift: int = 15) -> dict[str, float]:
    """LSE-D, LSE-C and the AV offset (frames; positive: the audio leads) from per-window
    SyncNet embeddings of the video and the audio (syncnet_python's `evaluate`)."""
    mdist = sync_distances(video, audio, vshift).mean(1)  # (31,) averaged over windows
    k = int(np.argmin(mdist))
    return {
        "lse_d": float(mdist[k]),
        "lse_c": float(np.median(mdist) - mdist[k]),
        "av_offset": int(vshift - k),
    }


def speech_onsets(samples: np.ndarray, frames: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Frame indices (25 fps) of the speech's onsets: peaks of the half-wave rectified
    spectral flux of the log-magnitude spectrum (one 40 ms hop per frame), above its mean
    plus half its spread and at least 3 frames apart (a simple onset detector in the manner
    of librosa's `onset_detect`, which the audio-beat part of Bailando uses)."""
    from scipy.signal import find_peaks

    hop = sr // FPS
    pad = np.zeros(frames * hop, np.float64)
    pad[: min(len(samples), len(pad))] = samples[: len(pad)]
    win = np.hanning(2 * hop)
    padded = np.pad(pad, (hop // 2, hop + hop // 2))  # window i is centred on frame i
    spec = np.stack(
        [np.abs(np.fft.rfft(win * padded[i * hop : i * hop + 2 * hop])) for i in range(frames)]
    )  # (F, hop + 1)
    logs = np.log1p(100 * spec)
    flux = np.concatenate([[0.0], np.maximum(np.diff(logs, axis=0), 0).sum(1)])  # (F,)
    if flux.std() == 0:
        return np.zeros(0, int)
    peaks, _ = find_peaks(flux, height=flux.mean() + 0.5 * flux.std(), distance=3)
    return peaks


def motion_beats(features: np.ndarray) -> np.ndarray:
    """Frame indices of the local minima of the smoothed speed of motion features (F, D)."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import argrelextrema

    features = np.asarray(features, np.float64)
    if len(features) < 3:
        return np.zeros(0, int)
    speed = np.linalg.norm(np.diff(features, axis=0), axis=1)  # (F-1,)
    speed = gaussian_filter1d(speed, SPEED_SMOOTH)
    return argrelextrema(speed, np.less)[0]  # Bailando's indexing: speed[i] = |f[i+1] - f[i]|


def beat_align(audio_beats: np.ndarray, motion_beats_: np.ndarray) -> float:
    """Bailando's BA: mean over audio beats of exp(-min_d^2 / (2 * 9)); nan without beats."""
    audio_beats, motion_beats_ = np.asarray(audio_beats), np.asarray(motion_beats_)
    if len(audio_beats) == 0 or len(motion_beats_) == 0:
        return float("nan")
    d2 = ((audio_beats[:, None] - motion_beats_[None, :]) ** 2).min(1)
    return float(np.mean(np.exp(-d2 / (2 * BEAT_SIGMA2))))


def diversity(angles: np.ndarray) -> float:
    """Mean over features of their std over frames (angles (F, 3) in degrees); nan if F < 2."""
    angles = np.asarray(angles, np.float64)
    angles = angles[np.isfinite(angles).all(1)]
    return float(angles.std(0).mean()) if len(angles) >= 2 else float("nan")


def lmd(
    gen_lm: np.ndarray, ref_lm: np.ndarray, gen_valid: np.ndarray, ref_valid: np.ndarray
) -> float:
    """Mouth landmark distance (module doc) of landmarks (F, 478, 2) in image coordinates;
    nan when no frame has a face in both."""
    n = min(len(gen_lm), len(ref_lm))
    ok = np.flatnonzero(gen_valid[:n] & ref_valid[:n])
    if not len(ok):
        return float("nan")
    lips = list(LIPS)
    g, r = gen_lm[ok][:, lips].astype(np.float64), ref_lm[ok][:, lips].astype(np.float64)
    eyes = ref_lm[ok][:, list(EYE_CORNERS)].astype(np.float64)
    scale = np.linalg.norm(eyes[:, 0] - eyes[:, 1], axis=-1)  # (n,)
    return float((np.linalg.norm(g - r, axis=-1).mean(1) / np.maximum(scale, 1e-9)).mean())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """r over the entries finite in both; nan with fewer than 3 or no spread."""
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])
