"""Typed skips: the only way a stage reports bad input (STYLE.md rule 7).

A stage raises `Skip(reason, detail)`; only the runner catches it, records it in
`failures.jsonl` and counts it in the summary. Reasons are an enum so that the
summary table and the shard stats can count them.
"""

from __future__ import annotations

from enum import StrEnum


class SkipReason(StrEnum):
    EMPTY_FILE = "empty_file"  # zero bytes
    TRUNCATED = "truncated"  # container recognised but cut short / index missing
    NOT_A_VIDEO = "not_a_video"  # ffprobe cannot read it at all
    NO_VIDEO_STREAM = "no_video_stream"
    NO_AUDIO_STREAM = "no_audio_stream"
    TOO_SHORT = "too_short"  # shorter than the minimum clip / tube length
    AV_MISMATCH = "av_length_mismatch"  # audio and video durations differ beyond tolerance
    NO_FACE = "no_face"  # no face (or no face tube long enough)
    FACE_TOO_SMALL = "face_too_small"
    TOO_MANY_INVALID = "too_many_invalid_frames"  # coefficients: too many frames without a face
    DECODE_ERROR = "decode_error"  # ffmpeg failed while decoding/encoding
    TIMEOUT = "timeout"  # an external tool ran past its timeout
    INCOMPLETE = "incomplete_inputs"  # shard: an earlier stage produced no output for this clip
    INCONSISTENT = "inconsistent_inputs"  # shard: frame counts of the parts disagree
    NON_FINITE = "non_finite_values"  # a model gave inf/NaN (or overflowed float16)
    FACE_ROTATED = "face_rotated"  # the face lies on its side (a sideways camera, lost rotation)


class Skip(Exception):  # noqa: N818 - it is a control-flow signal, not an error
    """Raised by a stage when one input cannot produce a correct output."""

    def __init__(self, reason: SkipReason, detail: str = "", stderr: str | None = None):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.stderr = stderr

    def record(self) -> dict:
        out = {"reason": self.reason.value, "detail": self.detail}
        if self.stderr:
            out["stderr"] = self.stderr[-4000:]
        return out


class PrepError(Exception):
    """A user error (bad flag, malformed manifest row, missing file): printed, exit code 2."""
