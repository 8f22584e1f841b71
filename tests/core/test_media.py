"""ffmpeg wrappers: a damaged file cannot hang a reader; timeouts fire; mp4 index reads."""

import threading

import numpy as np
import pytest
from helpers import ffmpeg_video

from fd2talk.core import media
from fd2talk.core.media.ffprobe import _rate
from fd2talk.core.schema import SAMPLE_RATE
from fd2talk.core.skip import Skip, SkipReason


def _damaged(tmp_path):
    """A long video whose media data is overwritten with noise: ffmpeg logs an error per
    frame, far more than a pipe buffer holds."""
    src = ffmpeg_video(tmp_path / "ok.mp4", seconds=40.0, size="160x120", audio=False)
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for start in range(4096, len(data) - 4096, 2048):
        data[start : start + 512] = rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    return bad


def test_frames_of_a_stream_chosen_by_its_index(tmp_path):
    """`stream` reads the stream of that absolute index (probe's `video_index`, never cover
    art), not the n-th video stream; without it, the first video stream."""
    import subprocess

    base = ffmpeg_video(tmp_path / "base.mp4", seconds=1.0, size="64x48", audio=False)
    still = ffmpeg_video(
        tmp_path / "still.mp4", seconds=0.4, size="64x48", audio=True, source="color"
    )  # black, with a tone
    src = tmp_path / "three.mp4"  # 0: the black video, 1: its audio, 2: the test pattern
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(still),
            "-i",
            str(base),
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-map",
            "1:v",
            "-c",
            "copy",
            str(src),
        ],
        check=True,
        timeout=60,
    )
    video = list(media.iter_frames(src, 64, 48, 60, stream=2))
    assert len(video) == 25
    np.testing.assert_array_equal(video, list(media.iter_frames(base, 64, 48, 60)))
    first = list(media.iter_frames(src, 64, 48, 60))
    assert len(first) == 10 and np.max(first) < 20 < video[0].mean()


def test_damaged_file_does_not_hang(tmp_path):
    bad = _damaged(tmp_path)
    out = {}

    def read():
        try:
            out["frames"] = sum(1 for _ in media.iter_frames(bad, 64, 48, timeout=60))
        except Skip as skip:
            out["skip"] = skip

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(90)
    assert not t.is_alive(), "iter_frames hung on a damaged file"
    assert "frames" in out or out["skip"].reason in (SkipReason.DECODE_ERROR, SkipReason.TIMEOUT)


@pytest.mark.slow
def test_timeout_kills_a_slow_decode(tmp_path):
    src = ffmpeg_video(tmp_path / "long.mp4", seconds=60.0, size="640x480", audio=False)
    with pytest.raises(Skip) as err:
        for _ in media.iter_frames(src, 640, 480, timeout=0.3):
            pass
    assert err.value.reason is SkipReason.TIMEOUT


def test_mp4_index_matches_ffprobe(tmp_path):
    src = ffmpeg_video(tmp_path / "a.mp4", seconds=2.0)
    tracks = {t.kind: t for t in media.mp4_tracks(src)}
    assert tracks["video"].packets == media.count_frames(src) == 50
    assert abs(tracks["audio"].duration - media.probe(src).audio_duration) < 1e-3


def test_damaged_index_and_wav_are_skips(tmp_path):
    """Bad bytes where an index or header is read give a Skip naming the file, no traceback."""
    import struct
    import wave

    src = ffmpeg_video(tmp_path / "a.mp4", seconds=1.0)
    data = bytearray(src.read_bytes())
    pos = data.index(b"stsz") - 4  # the sample-size box: its size says 8 (header only)
    data[pos : pos + 4] = struct.pack(">I", 8)
    bad = tmp_path / "short_box.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(Skip) as err:
        media.mp4_tracks(bad)
    assert err.value.reason is SkipReason.DECODE_ERROR and "short_box.mp4" in err.value.detail
    moov = data.index(b"moov") - 4
    cut = tmp_path / "cut_moov.mp4"  # the index ends half-way
    cut.write_bytes(bytes(data[: moov + 200]))
    with pytest.raises(Skip):
        media.mp4_tracks(cut)
    # A wav whose header promises twice the samples it holds; one that is no wav at all.
    wav = tmp_path / "lie.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.zeros(640, "<i2").tobytes())
    raw = bytearray(wav.read_bytes())
    raw[40:44] = struct.pack("<I", 2 * 640 * 2)  # the data chunk's size
    wav.write_bytes(bytes(raw))
    with pytest.raises(Skip) as err:
        media.read_wav(wav)
    assert err.value.reason is SkipReason.DECODE_ERROR and "1280 samples" in err.value.detail
    wav.write_bytes(b"RIFF" + b"\0" * 10)
    with pytest.raises(Skip):
        media.read_wav(wav)


def test_count_frames_and_rates_of_odd_input(tmp_path):
    """No video stream to count: a Skip (ffprobe prints nothing); unusable rates read as 0."""
    audio_only = tmp_path / "a.m4a"
    import subprocess

    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", str(audio_only)],
        check=True,
    )
    with pytest.raises(Skip) as err:
        media.count_frames(audio_only)
    assert err.value.reason is SkipReason.DECODE_ERROR
    assert [_rate(r) for r in ("25/1", "1/0", "0/0", "x", None, "-5/1")] == [25.0, 0, 0, 0, 0, 0]
