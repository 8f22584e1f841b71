"""Stage `clip`: manifest rows -> 25 fps constant-frame-rate clips with 16 kHz mono audio.

Any container/codec/frame rate/sample rate/channel count ffmpeg reads is accepted.
A source longer than `max_seconds` is split into equal fragments no longer than
that. Each fragment is cut on the 25 fps frame grid, encoded once (x264 + AAC,
deterministic bytes) and checked: its frame count must be exact and its audio
must cover its video.

The video has a keyframe every `KEYINT` frames and on its last frame (no
scene cuts), so the `crop` stage can decode just the frames it detects faces on
(`ffmpeg -skip_frame nokey`) or seek to any frame exactly, decoding at most
`KEYINT` - 1 frames it does not need. The cost, against x264's default GOP at
the same quality (the three shared clips): 1.6x the file size (2.65 -> 4.24 MB),
about 15% more time to decode every frame, the same encoding time.

Outputs per fragment: `clips/<key>_fNNN.mp4` and `clips/<key>_fNNN.json`
(source, row, time span, frame count, size, keyframe interval). The json is
written last: its presence means the mp4 beside it is complete.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from fd2talk.core import atomic, media
from fd2talk.core.schema import FPS, SAMPLE_RATE
from fd2talk.core.skip import Skip, SkipReason
from fd2talk.pipeline.runner.work import Item
from fd2talk.pipeline.sources.manifest import Row, read_manifest

OUT_DIR = "clips"
KEYINT = 5  # frames between keyframes (the crop stage's default detect_every)
START_TOLERANCE = 0.5 / SAMPLE_RATE  # seconds a clip's stream may start away from 0


@dataclass(frozen=True)
class ClipConfig:
    manifest: str = ""  # path of the CSV/JSONL manifest
    max_seconds: float = 30.0  # longer sources are split into equal fragments
    min_seconds: float = 1.0  # shorter spans are skipped (too_short)
    av_tolerance: float = 0.2  # seconds audio and video durations may differ by
    timeout: float = 600.0  # seconds per ffmpeg call


def fragments(n_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Split frames [0, n_frames) into the fewest equal parts of at most `max_frames`."""
    n = max(1, math.ceil(n_frames / max_frames))
    bounds = [round(k * n_frames / n) for k in range(n + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(n)]


def encode_clip(
    src: Path,
    dst: Path,
    start: float,
    n_frames: int,
    timeout: float,
    streams: tuple[int, int | None] | None = None,
    audio: bool = True,
) -> str:
    """Cut `n_frames` frames at 25 fps from `start` s into `dst` (x264 + AAC 16 kHz mono).

    `streams`: the (video, audio) stream indices to take (`media.probe`'s choice,
    which never takes cover art); None: the first of each. Both output streams
    start at 0: audio that starts late is led in with silence (`aresample`'s
    `first_pts=0`), video that starts late repeats its first frame (the fps
    filter), so sample 0 and frame 0 are presented at the same time. The audio
    is padded with silence if the source's ends a little early, so it always
    lasts n_frames / FPS s. Keyframes: frames 0, KEYINT, 2 KEYINT, ... and the
    last frame. `audio=False` (a video-only row): the video alone. Returns ffmpeg's stderr.
    """
    source = ffmpeg.input(str(src), ss=f"{start:.6f}")
    video = (
        source[str(streams[0]) if streams else "v:0"]
        .filter("fps", FPS)
        # 4:2:0 needs even sides: an odd-sized source loses its last row/column
        .filter("crop", "trunc(iw/2)*2", "trunc(ih/2)*2", 0, 0)
        .filter("setsar", 1)
    )
    outputs = [video]
    options = {
        "t": f"{n_frames / FPS:.6f}",
        "frames:v": n_frames,
        **media.x264(KEYINT),
        "force_key_frames": f"expr:eq(n,{n_frames - 1})",
        **media.BITEXACT,
    }
    if audio:
        sound = str(streams[1]) if streams and streams[1] is not None else "a:0"
        outputs.append(
            source[sound]
            .filter("aresample", SAMPLE_RATE, first_pts=0, **{"async": 1})
            .filter("apad")
        )
        options.update(media.AAC)
    cmd = media.command(ffmpeg.output(*outputs, str(dst), **options))
    return media.run_tool(cmd, timeout, f"ffmpeg cutting {src}").stderr.decode(errors="replace")


def check_starts(path: Path, info: media.Probe, stderr: str = "") -> None:
    """Both tracks of an encoded clip start at 0 (no empty edit, no start time), else a Skip.

    The crop stage counts frames and samples from each stream's start: a stream
    starting later would put the crop's audio out of step with its video.
    """
    late = {t.kind: t.start for t in media.mp4_tracks(path) if t.start > 0}
    late.update(
        {
            kind: t
            for kind, t in (("video", info.video_start), ("audio", info.audio_start))
            if abs(t) > START_TOLERANCE
        }
    )
    if late:
        raise Skip(
            SkipReason.AV_MISMATCH,
            "the clip's "
            + ", ".join(f"{kind} starts at {t:.3f} s" for kind, t in sorted(late.items()))
            + " (both must start at 0)",
            stderr,
        )


class ClipStage:
    """Cuts and normalises source videos (one item per manifest row)."""

    name = "clip"
    out_dir = OUT_DIR
    input_fields = ("manifest",)  # another manifest adds rows; it does not change settings

    def __init__(self, config: ClipConfig):
        self.config = config

    def items(self, work: Path) -> list[Item]:
        rows = read_manifest(Path(self.config.manifest))
        return [Item(r.key, r.to_dict(), group=r.key) for r in sorted(rows, key=lambda r: r.key)]

    def setup(self) -> None:
        pass

    def process(self, item: Item, work: Path) -> list[str]:
        cfg = self.config
        row = Row(**item.payload)
        src = Path(row.path)
        info = media.probe(src, need_audio=row.audio)
        if row.audio and abs(info.video_duration - info.audio_duration) > cfg.av_tolerance:
            raise Skip(
                SkipReason.AV_MISMATCH,
                f"video lasts {info.video_duration:.2f} s, audio "
                f"{info.audio_duration:.2f} s (tolerance {cfg.av_tolerance} s)",
            )
        length = min(info.video_duration, info.audio_duration) if row.audio else info.video_duration
        start = row.start or 0.0
        end = min(row.end if row.end is not None else length, length)
        if end - start < cfg.min_seconds:
            raise Skip(
                SkipReason.TOO_SHORT,
                f"{max(0.0, end - start):.2f} s from {start:.2f} s (minimum "
                f"{cfg.min_seconds} s; the source lasts {length:.2f} s)",
            )
        total = math.floor((end - start) * FPS + 1e-6)
        outputs = []
        for k, (f0, f1) in enumerate(fragments(total, round(cfg.max_seconds * FPS))):
            key = f"{row.key}_f{k:03d}"
            mp4 = work / OUT_DIR / f"{key}.mp4"
            t0 = start + f0 / FPS
            with atomic.atomic_path(mp4) as tmp:
                stderr = encode_clip(
                    src,
                    tmp,
                    t0,
                    f1 - f0,
                    cfg.timeout,
                    (info.video_index, info.audio_index),
                    row.audio,
                )
                got = media.count_frames(tmp)
                if got < f1 - f0:
                    raise Skip(
                        SkipReason.TRUNCATED,
                        f"decoded {got} of {f1 - f0} frames from {t0:.2f} s: the source "
                        "is cut short or damaged",
                        stderr,
                    )
                out = media.probe(tmp, need_audio=row.audio)
                if row.audio and out.audio_duration + media.AV_TOLERANCE < (f1 - f0) / FPS:
                    raise Skip(
                        SkipReason.TRUNCATED,
                        f"audio ends at {out.audio_duration:.2f} s of {(f1 - f0) / FPS:.2f} s",
                        stderr,
                    )
                check_starts(tmp, out, stderr)
            meta = {
                "key": key,
                "source": str(src),
                "row": row.to_dict(),
                "fragment": k,
                "video_id": row.video_id,
                "speaker_id": row.speaker_id,
                "split": row.split,
                "start": round(t0, 6),
                "frames": f1 - f0,
                "fps": FPS,
                "width": out.width,
                "height": out.height,
                "sample_rate": SAMPLE_RATE,
                "keyint": KEYINT,
                "last_keyframe": True,
                "source_probe": {
                    "fps": round(info.fps, 4),
                    "width": info.width,
                    "height": info.height,
                    "video_codec": info.video_codec,
                    "audio_codec": info.audio_codec,
                    "sample_rate": info.sample_rate,
                    "channels": info.channels,
                },
            }
            if not row.audio:
                meta["audio"] = False  # a video-only clip (only then recorded)
            atomic.write_json(mp4.with_suffix(".json"), meta)
            outputs += [f"{OUT_DIR}/{key}.mp4", f"{OUT_DIR}/{key}.json"]
        return outputs


def clip_metadata(work: Path) -> dict[str, dict]:
    """key -> metadata of every complete clip in `work` (its json exists)."""
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((Path(work) / OUT_DIR).glob("*.json"))
    }
