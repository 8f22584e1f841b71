"""Media with ffmpeg and ffprobe: timeouts on every call, typed skips with the tool's stderr
kept, and generation's user-facing inputs and output.

This `__init__` is the package's interface: it re-exports the public names of its modules,
so callers write `from fd2talk.core import media` and `media.probe(...)`. The modules, one
concept each, import each other directly (never this package):

- `tools`: finding ffmpeg/ffprobe, compiling ffmpeg-python graphs (`command`), `run_tool`
- `encoding`: the encoder settings every stage shares (`X264`, `AAC`, `BITEXACT`, `x264`)
- `ffprobe`: `probe` (a file's streams, as a `Probe`) and `count_frames`
- `mp4`: `mp4_tracks`, an mp4's tracks read from its index without a process
- `read`: decoded frames (an ffmpeg pipe, rawvideo rgb24) and audio (16 kHz mono float32)
- `inputs`: portraits of any kind and speech of any format, as `UserError`s when bad
- `writer`: `VideoWriter`, generation's mp4 written batch by batch with its speech
"""

from fd2talk.core.media.encoding import (
    AAC,
    AV_TOLERANCE,
    BITEXACT,
    X264,
    X264_PARAMS,
    as_args,
    x264,
)
from fd2talk.core.media.ffprobe import PROBE_TIMEOUT, Probe, count_frames, probe
from fd2talk.core.media.inputs import (
    AUDIO_TIMEOUT,
    audio_streams,
    frame_count,
    read_image,
    read_speech,
    to_rgb8,
)
from fd2talk.core.media.mp4 import Mp4Track, mp4_tracks
from fd2talk.core.media.read import iter_frames, read_audio, read_frames, read_wav
from fd2talk.core.media.tools import command, run_tool, tool
from fd2talk.core.media.writer import VideoWriter

__all__ = [
    "AAC",
    "AUDIO_TIMEOUT",
    "AV_TOLERANCE",
    "BITEXACT",
    "PROBE_TIMEOUT",
    "X264",
    "X264_PARAMS",
    "Mp4Track",
    "Probe",
    "VideoWriter",
    "as_args",
    "audio_streams",
    "command",
    "count_frames",
    "frame_count",
    "iter_frames",
    "mp4_tracks",
    "probe",
    "read_audio",
    "read_frames",
    "read_image",
    "read_speech",
    "read_wav",
    "run_tool",
    "to_rgb8",
    "tool",
    "x264",
]
