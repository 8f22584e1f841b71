"""ffmpeg wrappers: a damaged file cannot hang a reader; timeouts fire; mp4 index reads."""

import threading

import numpy as np
import pytest
from conftest import ffmpeg_video

from fd2talk.pipeline import media
from fd2talk.pipeline.skip import Skip, SkipReason


def _damaged(tmp_path):
    """A long video whose media data is overwritten with noise: ffmpeg logs an error per
    frame, far more than a pipe buffer holds."""
    src = ffmpeg_video(tmp_path / "ok.mp4", seconds=40.0, size="160x120", audio=False)
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for start in range(4096, len(data) - 4096, 2048):
        data[start:start + 512] = rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    return bad


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
