"""Stage-2 items: the decoded-clip cache keeps clips up to its byte budget, decodes each clip
once while they fit, and what it returns is what the decoder gives."""

import numpy as np
from helpers import ffmpeg_video

from fd2talk.core.schema import MEDIA_KEY
from fd2talk.model.data import frame_items
from fd2talk.model.data.loader import decode_frames


def test_the_cache_decodes_once_and_drops_the_oldest_past_its_budget(tmp_path, monkeypatch):
    clips = []
    for k in range(3):
        path = ffmpeg_video(tmp_path / f"c{k}.mp4", seconds=0.4, size="64x64", audio=False)
        clips.append({"key": f"c{k}", MEDIA_KEY: path.read_bytes()})
    calls = []

    def counting(mp4, size):
        calls.append(size)
        return decode_frames(mp4, size)

    monkeypatch.setattr(frame_items, "decode_frames", counting)
    one = decode_frames(clips[0][MEDIA_KEY], 32)  # (10, 32, 32, 3): 30 kB a clip
    cache = frame_items._DecodedClips(megabytes=0)  # 0 MB: only the newest clip stays
    cache.budget = int(2.5 * one.nbytes)  # room for two clips
    for c in clips[:2] * 3:
        got = cache.get(c, 32)
    assert len(calls) == 2 and np.array_equal(got, decode_frames(clips[1][MEDIA_KEY], 32))
    cache.get(clips[2], 32)  # a third clip: the least recently used (c0) goes
    assert [k[0] for k in cache.clips] == ["c1", "c2"] and cache.bytes == 2 * one.nbytes
    cache.get(clips[0], 32)
    assert len(calls) == 4
    small = frame_items._DecodedClips(megabytes=0)
    small.get(clips[0], 32)
    small.get(clips[1], 32)  # over budget, but the clip being used always stays
    assert list(small.clips) and len(small.clips) == 1
