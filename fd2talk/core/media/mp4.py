"""The tracks of an mp4/mov read from its index (the ISO-BMFF `moov` box), without starting a
process: packet counts, presented durations and start delays, as ffprobe reports them for
ffmpeg's own mp4s."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fd2talk.core.skip import Skip, SkipReason


@dataclass(frozen=True)
class Mp4Track:
    """One track of an mp4 as its index (moov) says."""

    kind: str  # "video", "audio", or the handler type as found (e.g. "text")
    packets: int  # samples (for video: frames)
    duration: float  # seconds presented: the edit list's span (ffprobe's stream duration)
    start: float = 0.0  # seconds of empty edits before the first sample is presented


def _mp4_boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO-BMFF boxes in buf[start:end]."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, start)
        head = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", buf, start + 8)
            head = 16
        elif size == 0:
            size = end - start
        if size < head or start + size > end:
            raise ValueError(f"box {kind!r} at {start} has a bad size {size}")
        yield kind, start + head, start + size
        start += size


def _mp4_find(buf: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    """Payload span of the first box at `path` (e.g. b"mdia", b"mdhd") under buf[start:end]."""
    for kind, s, e in _mp4_boxes(buf, start, end):
        if kind == path[0]:
            return (s, e) if len(path) == 1 else _mp4_find(buf, s, e, *path[1:])
    return None


def _mp4_need(buf: bytes, start: int, end: int, *path: bytes) -> bytes:
    """Payload of the box at `path` (a copy: a read past its end fails instead of reading
    the next box); ValueError when there is none."""
    span = _mp4_find(buf, start, end, *path)
    if span is None:
        raise ValueError(f"no {b'/'.join(path).decode()} box")
    return buf[span[0] : span[1]]


def _read_moov(path: Path) -> bytes:
    """The `moov` box of an mp4, reading only box headers until it is found."""
    with open(path, "rb") as f:
        size_total = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size_total:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack_from(">I4s", head)
            if size == 1:
                (size,) = struct.unpack_from(">Q", head, 8)
            elif size == 0:
                size = size_total - pos
            if size < 8:
                break
            if kind == b"moov":
                f.seek(pos)
                moov = f.read(size)
                if len(moov) != size:
                    raise ValueError(f"the moov box is cut short ({len(moov)} of {size} bytes)")
                return moov
            pos += size
    raise ValueError("no moov box")


def _edits(elst: bytes, movie_scale: int) -> tuple[float, float]:
    """(seconds presented, seconds of empty edits before the first sample) of an edit list."""
    version, (n,) = elst[0], struct.unpack_from(">I", elst, 4)
    fmt, step = (">Qq", 20) if version else (">Ii", 12)
    edits = [struct.unpack_from(fmt, elst, 8 + k * step) for k in range(n)]
    first = next((k for k, (_, t) in enumerate(edits) if t != -1), len(edits))
    return (
        sum(d for d, t in edits if t != -1) / movie_scale,
        sum(d for d, _ in edits[:first]) / movie_scale,
    )


def mp4_tracks(path: Path) -> list[Mp4Track]:
    """The tracks of an mp4/mov from its index, without starting a process.

    Cheap enough to check every output of a stage (packet counts and presented
    durations, as `ffprobe -count_packets` reports them for ffmpeg's own mp4s, and
    the delay of an empty edit before a track starts). A file that is no complete
    mp4 (a box cut short, a zero time scale...) raises `Skip(DECODE_ERROR)`.
    """
    kinds = {b"vide": "video", b"soun": "audio"}
    try:
        moov = _read_moov(Path(path))
        mvhd = _mp4_need(moov, 8, len(moov), b"mvhd")
        # version 0: 4-byte times (scale at +12), version 1: 8-byte times (scale at +20)
        (movie_scale,) = struct.unpack_from(">I", mvhd, 20 if mvhd[0] else 12)
        tracks = []
        for kind, s, e in _mp4_boxes(moov, 8, len(moov)):
            if kind != b"trak":
                continue
            hdlr = _mp4_need(moov, s, e, b"mdia", b"hdlr")
            mdhd = _mp4_need(moov, s, e, b"mdia", b"mdhd")
            stsz = _mp4_need(moov, s, e, b"mdia", b"minf", b"stbl", b"stsz")
            if mdhd[0]:
                scale, duration = struct.unpack_from(">IQ", mdhd, 20)
            else:
                scale, duration = struct.unpack_from(">II", mdhd, 12)
            seconds, start = duration / scale, 0.0
            elst = _mp4_find(moov, s, e, b"edts", b"elst")
            if elst:  # the presented span: the non-empty edits (media time != -1)
                seconds, start = _edits(moov[elst[0] : elst[1]], movie_scale)
            handler = hdlr[8:12]
            if len(handler) != 4:
                raise ValueError(f"the hdlr box has {len(hdlr)} bytes")
            (packets,) = struct.unpack_from(">I", stsz, 8)
            tracks.append(
                Mp4Track(kinds.get(handler, handler.decode("latin-1")), packets, seconds, start)
            )
        return tracks
    except (ValueError, struct.error, IndexError, ZeroDivisionError) as e:
        raise Skip(SkipReason.DECODE_ERROR, f"{path} is no complete mp4: {e}") from None
