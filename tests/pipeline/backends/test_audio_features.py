"""Audio encoders: exact 25 fps frame counts, log-mel that follows the signal, wav2vec 2.0 loaded
through the real `from_pretrained` path (tiny random models saved by the tests), chunking."""

import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
from helpers.audio import SPF, SR, frame_rms, save_model, voiced

from fd2talk.core import media
from fd2talk.core.schema import FPS
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends.audio_features import (
    LogMel,
    Wav2Vec2Features,
    Wav2Vec2Options,
    fit_length,
    mel_filterbank,
    plan_windows,
    save_random_wav2vec2,
)

LENGTH_CASES = [(n, d) for n in (1, 2, 7, 25, 101) for d in (-700, -1, 0, 1, 333, 2000)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tests' tiny model, saved by the same helper the bench uses."""
    return str(save_random_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny", "tiny"))


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory):
    """A model whose layer-0 output is local in time (layer-norm conv encoder, no attention
    used at layer 0): chunked and single-pass outputs must then agree exactly."""
    return save_model(
        tmp_path_factory.mktemp("w2v") / "local",
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )


def noise(seconds, seed=0, scale=0.1):
    return (np.random.default_rng(seed).standard_normal(round(seconds * SR)) * scale).astype(
        np.float32
    )


# ----------------------------------------------------------------------------- shared pieces


def test_fit_length_pads_and_trims_to_whole_frames():
    x = np.arange(1000, dtype=np.float32)
    assert fit_length(x, 1).tolist() == x[:640].tolist()
    y = fit_length(x, 3)
    assert y.shape == (1920,) and y[:1000].tolist() == x.tolist() and not y[1000:].any()


@pytest.mark.parametrize(
    "n, chunk, context",
    [(10, 100, 5), (1000, 375, 62), (1001, 375, 62), (376, 375, 62), (15000, 375, 62), (7, 1, 0)],
)
def test_windows_cover_every_frame_once_with_context(n, chunk, context):
    width, plan = plan_windows(n, chunk, context)
    owned = np.zeros(n, int)
    for start, a, b in plan:
        assert 0 <= start <= a < b <= start + width <= n
        assert b - a <= chunk
        owned[a:b] += 1
        assert a - start >= context or start == 0  # context on the left unless at the start
        assert start + width - b >= context or start + width == n
    assert (owned == 1).all()
    assert width <= max(n, chunk + 2 * context)


# ----------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("n, delta", LENGTH_CASES)
def test_logmel_frame_count_is_exact(n, delta):
    x = noise(max(0, n * SPF + delta) / SR)
    f = LogMel().features(x, n)
    assert f.shape == (n, 80) and f.dtype == np.float32 and np.isfinite(f).all()


def test_mel_filterbank_is_slaney_triangles():
    """transformers' filters as librosa's defaults make them: 80 triangles with area 1 (Slaney
    normalisation), centres rising, linear spacing below 1 kHz and logarithmic above."""
    fb = mel_filterbank()
    assert fb.shape == (80, 641) and fb.dtype == np.float32 and (fb >= 0).all()
    bin_hz = SR / 2 / 640
    wide = (fb > 0).sum(1) >= 12  # triangles spanning enough bins to integrate
    np.testing.assert_allclose(fb[wide].sum(1) * bin_hz, 1.0, rtol=0.1)
    centres = np.argmax(fb, 1) * bin_hz
    assert (np.diff(centres) >= 0).all()
    steps = np.diff(centres)
    assert steps[centres[1:] < 900].std() < 2 * bin_hz  # even steps (linear part)
    assert steps[-1] > 5 * steps[0]  # growing steps (logarithmic part)


def test_logmel_tone_lands_in_its_band():
    fb = mel_filterbank()
    freqs = np.linspace(0, SR / 2, fb.shape[1])
    for hz in (200.0, 1000.0, 4000.0):
        t = np.arange(2 * SR) / SR
        f = LogMel().features(np.sin(2 * np.pi * hz * t).astype(np.float32), 50)
        band = int(np.argmax(f[25]))
        centre = freqs[int(np.argmax(fb[band]))]
        assert abs(centre - hz) < 0.1 * hz, (hz, centre)


def test_logmel_is_centred_on_each_frame():
    """A burst in frames [20, 30): row i sees samples [640 i - 320, 640 i + 960)."""
    x = np.zeros(50 * SPF, np.float32)
    x[20 * SPF : 30 * SPF] = noise(10 * SPF / SR, scale=0.3)
    energy = LogMel().features(x, 50).mean(1)
    quiet, loud = energy[:18].max(), energy[20:30].min()
    assert loud > quiet + 10  # ln power: orders of magnitude
    assert energy[18] < quiet + 1  # ends before the burst
    assert energy[19] > quiet + 5  # its window's last 320 samples reach the burst
    assert energy[31] < quiet + 1 and energy[30] > quiet + 5


def test_logmel_follows_a_speech_like_envelope():
    x = voiced(8.0)
    f = LogMel().features(x, 200)
    r = np.corrcoef(f.mean(1), np.log(frame_rms(x, 200) + 1e-4))[0, 1]
    assert r > 0.9, r


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_logmel_follows_espeak_speech(tmp_path):
    wav = tmp_path / "s.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-w",
            str(wav),
            "Hello there, this is a short test of speech with pauses. And then more words.",
        ],
        check=True,
        timeout=60,
    )
    x = media.read_audio(wav, 60)
    n = len(x) // SPF
    f = LogMel().features(x, n)
    loud = frame_rms(x, n) > 0.05
    assert loud.any() and (~loud).any()
    assert f[loud].mean() > f[~loud].mean() + 3


def test_logmel_follows_real_speech(shared_media):
    x = media.read_audio(shared_media / "speech_rd31.wav", 60)
    n = len(x) // SPF
    f = LogMel().features(x, n)
    assert f.shape == (n, 80) and n == 200
    r = np.corrcoef(f.mean(1), np.log(frame_rms(x, n) + 1e-4))[0, 1]
    assert r > 0.8, r


# ----------------------------------------------------------------------------- wav2vec 2.0


@pytest.mark.parametrize("n, delta", LENGTH_CASES)
def test_wav2vec2_frame_count_is_exact(tiny_dir, n, delta):
    enc = _encoder(tiny_dir)
    x = noise(max(0, n * SPF + delta) / SR)
    f = enc.features(x, n)
    assert f.shape == (n, 64) and f.dtype == np.float32 and np.isfinite(f).all()


_ENCODERS: dict = {}


def _encoder(src, **opts) -> Wav2Vec2Features:
    key = (src, tuple(sorted(opts.items())))
    if key not in _ENCODERS:
        _ENCODERS[key] = Wav2Vec2Features(src, Wav2Vec2Options(device="cpu", **opts))
    return _ENCODERS[key]


def test_wav2vec2_equals_a_plain_transformers_forward(tiny_dir):
    """Normalisation as Wav2Vec2FeatureExtractor, the last hidden state, frame-centre alignment."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    x, n = voiced(3.0) * 3 + 0.05, 75
    ours = _encoder(tiny_dir).features(x, n)
    values = Wav2Vec2FeatureExtractor(do_normalize=True)(x, sampling_rate=SR).input_values[0]
    values = np.asarray(values, np.float32)
    assert abs(values.mean()) < 1e-3 and abs(values.std() - 1) < 1e-3
    model = Wav2Vec2Model.from_pretrained(tiny_dir).eval()
    with torch.inference_mode():
        hidden = model(torch.from_numpy(values)[None]).last_hidden_state[0].numpy()  # (149, 64)
    assert hidden.shape[0] == 2 * n - 1
    # hidden state j covers samples [320 j, 320 j + 400); video frame i's centre is 640 i + 319.5
    pos = (640 * np.arange(n) + 319.5 - 199.5) / 320
    expected = np.stack(
        [np.interp(pos, np.arange(len(hidden)), hidden[:, d]) for d in range(64)], 1
    )
    np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=1e-4)


def test_wav2vec2_layer_selection(tiny_dir):
    from transformers import Wav2Vec2Model

    x, n = noise(2.0), 50
    first = _encoder(tiny_dir, layer=1).features(x, n)
    last = _encoder(tiny_dir, layer=-1).features(x, n)
    model = Wav2Vec2Model.from_pretrained(tiny_dir).eval()
    values = torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))[None]
    with torch.inference_mode():
        states = model(values, output_hidden_states=True).hidden_states  # 3 x (1, 99, 64)
    pos = (640 * np.arange(n) + 120) / 320
    for ours, h in ((first, states[1][0].numpy()), (last, states[2][0].numpy())):
        ref = np.stack([np.interp(pos, np.arange(len(h)), h[:, d]) for d in range(64)], 1)
        np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)
    assert np.abs(first - last).mean() > 0.005  # well above the tolerance above
    with pytest.raises(PrepError, match="2 transformer layers"):
        Wav2Vec2Features(tiny_dir, Wav2Vec2Options(layer=3))


@pytest.mark.parametrize("n, chunk, context", [(250, 1.0, 0.6), (261, 1.5, 0.6), (103, 1.0, 0.5)])
def test_chunks_stitch_exactly_when_the_model_is_local(local_dir, n, chunk, context):
    """Layer 0 of a layer-norm model sees ~0.2 s of audio: with more context than that,
    stitched windows must reproduce one full pass (tests offsets and alignment exactly)."""
    x = voiced(n / FPS + 0.3, seed=n)
    full = _encoder(local_dir, layer=0, chunk_seconds=100.0).features(x, n)
    chunked = _encoder(local_dir, layer=0, chunk_seconds=chunk, context_seconds=context)
    width, plan = plan_windows(n, round(chunk * FPS), round(context * FPS))
    assert len(plan) > 2
    np.testing.assert_allclose(chunked.features(x, n), full, atol=1e-4, rtol=1e-4)


def test_chunked_long_audio_matches_one_pass(tiny_dir):
    """The full model (group norm over the window, global attention): context makes the
    stitched output agree with one pass over 60 s within a tolerance."""
    x, n = voiced(60.0, seed=3), 1500
    full = _encoder(tiny_dir, chunk_seconds=100.0).features(x, n)
    chunked = _encoder(tiny_dir, chunk_seconds=10.0, context_seconds=2.0).features(x, n)
    assert chunked.shape == full.shape
    err = np.abs(chunked - full)
    assert err.mean() < 0.02 * np.abs(full).mean(), (err.mean(), np.abs(full).mean())
    assert np.corrcoef(chunked.ravel(), full.ravel())[0, 1] > 0.999


def test_batched_windows_equal_unbatched(tiny_dir):
    x, n = noise(20.0, seed=5), 500
    one = _encoder(tiny_dir, chunk_seconds=4.0, context_seconds=1.0, batch_size=1).features(x, n)
    four = _encoder(tiny_dir, chunk_seconds=4.0, context_seconds=1.0, batch_size=4).features(x, n)
    np.testing.assert_allclose(one, four, atol=1e-4, rtol=1e-4)


def test_missing_model_fails_fast_with_advice(tmp_path):
    for src in (str(tmp_path / "nope"), "nobody-here/no-such-wav2vec2"):
        t0 = time.perf_counter()
        with pytest.raises(PrepError, match="save_pretrained") as err:
            Wav2Vec2Features(src)
        assert time.perf_counter() - t0 < 10
        assert src in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepError, match="no config.json"):
        Wav2Vec2Features(str(tmp_path / "empty"))


def test_saved_preprocessor_config_is_respected(tmp_path):
    """A model saved with do_normalize=False (e.g. wav2vec2-base) gets the raw waveform."""
    from transformers import Wav2Vec2FeatureExtractor

    src = save_model(tmp_path / "m")
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(src)
    enc = Wav2Vec2Features(src, Wav2Vec2Options(device="cpu"))
    x = noise(1.0) + 0.5
    assert not enc.normalize
    assert np.allclose(enc.normalise(x, 25), x[:16000])
    assert _encoder(save_model(tmp_path / "n")).normalize


@pytest.mark.parametrize("size", ["tiny", "tiny-stable"])
def test_every_layer_equals_hidden_states_for_both_layer_norm_kinds(tmp_path, size):
    """--layer k is hidden_states[k] of the full model for post-norm (base) and pre-norm
    (`do_stable_layer_norm`: large-lv60, XLS-R) models; the last is last_hidden_state."""
    from transformers import Wav2Vec2Model

    src = str(save_random_wav2vec2(tmp_path / size, size))
    x, n = noise(2.0), 50
    model = Wav2Vec2Model.from_pretrained(src).eval()
    assert model.config.do_stable_layer_norm == (size == "tiny-stable")
    values = torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))[None]
    with torch.inference_mode():
        out = model(values, output_hidden_states=True)
    refs = [h[0].numpy() for h in out.hidden_states[:-1]] + [out.last_hidden_state[0].numpy()]
    pos = (640 * np.arange(n) + 120) / 320
    feats = [_encoder(src, layer=k).features(x, n) for k in range(3)]
    for k, (ours, h) in enumerate(zip(feats, refs, strict=True)):
        ref = np.stack([np.interp(pos, np.arange(len(h)), h[:, d]) for d in range(64)], 1)
        np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4, err_msg=f"layer {k}")
    np.testing.assert_array_equal(feats[2], _encoder(src, layer=-1).features(x, n))
    if size == "tiny-stable":  # the final LayerNorm must not be applied to inner layers
        ln = model.encoder.layer_norm
        with torch.inference_mode():
            normed = ln(torch.from_numpy(refs[1])).numpy()
        assert np.abs(refs[1] - normed).mean() > 0.05
