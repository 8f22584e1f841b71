"""Stage `crop`: clips -> one 256x256 25 fps face crop with audio per face tube (DESIGN.md section 2).

The first-order-model crop (`tubes.py`): faces are detected, linked into tubes by
IoU with each tube's initial box (0.25), and every tube of at least `min_frames`
frames whose face is at least `min_face` pixels gets one square crop: its union
box enlarged by 0.1, squared, fitted into the frame. A video with two people
gives two crops.

Detection is cheap by design, not run on every frame where the boxes stay right
without it:

- frames are decoded at a reduced size (long side `detect_size`), and boxes
  are scaled back to clip pixels;
- the detector runs every `detect_every` frames and on the last frame; the
  frames in between are detected too when the two detections around them
  disagree: the number of faces changes, a face moved (IoU below `refine_iou`
  with its nearest box in the other frame), or a tube would end or start
  there. So tube ends are exact and the union box holds every monotone motion
  in between (a box moving linearly from A to B stays inside join(A, B)). What
  it can miss: a face hidden for fewer than `detect_every` frames between two
  agreeing detections (FOMM would split the tube there), and jitter of the
  detector on the frames it skips;
- only the frames the detector sees are decoded: the clip stage puts a keyframe
  every `clip.KEYINT` frames and on the last one (its json says so), so when
  `detect_every` is a multiple of that, ffmpeg decodes just the keyframes
  (`-skip_frame nokey`), and a gap to fill is decoded by an exact seek. A
  keyframe decodes to the same pixels either way, so this gives the same tubes
  (and byte-identical crops) as decoding every frame, which is what happens
  otherwise: once, streaming, the frames between detections in a small buffer
  (clips without that json entry, or keyframes not where it says).

`exhaustive(config)` sets detection on every full-resolution frame (the
reference the benchmark compares against).

Then ONE ffmpeg pass writes every tube's crop (split/trim/crop/scale, and
apad/atrim per tube for its audio, x264 + AAC 16 kHz mono). Each output is
checked from its mp4 index (frame count == tube length, audio length == video
length), renamed into place, and followed by its json (written last):
`crops/<clip>_t<N>.{mp4,json}`. The clip's size comes from its json, so a clip
costs two ffmpeg processes (plus one per gap to fill) and no ffprobe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from fd2talk.core import atomic, media
from fd2talk.core.schema import CROP_SIZE, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from fd2talk.core.skip import Skip, SkipReason
from fd2talk.pipeline.runner.work import Item
from fd2talk.pipeline.stages.clip import OUT_DIR as CLIPS_DIR
from fd2talk.pipeline.stages.clip import clip_metadata
from fd2talk.pipeline.stages.scan import Keyframes, Scan, scan_faces
from fd2talk.pipeline.stages.tubes import INCREASE, IOU_WITH_INITIAL, Tube, crop_box, long_tubes

OUT_DIR = "crops"
AV_TOLERANCE = media.AV_TOLERANCE  # seconds a crop's audio may differ from its video


@dataclass(frozen=True)
class CropConfig:
    detector: str = "mediapipe"  # "mediapipe" (offline) or "s3fd" (face-alignment weights)
    face_model: str | None = None  # face_landmarker.task (mediapipe); None: the default place
    s3fd_weights: str | None = None  # s3fd-619a316812.pth; None: $FD2TALK_S3FD_WEIGHTS
    detect_size: int = 320  # long side of the frames fed to the detector; 0: full resolution
    detect_every: int = 5  # detect every n-th frame (+ the last; + gaps where things change)
    refine_iou: float = 0.6  # fill a gap when a face's boxes on its two sides overlap less
    iou_with_initial: float = IOU_WITH_INITIAL  # FOMM: a tube goes on while IoU(first box) > it
    increase: float = INCREASE  # FOMM: enlarge the tube box by this fraction per side
    min_frames: int = FPS  # shorter tubes are dropped (1 s; FOMM's default: 150 frames)
    min_face: int = 64  # tubes whose face (median box side, clip pixels) is smaller are dropped
    size: int = CROP_SIZE  # side of the output crops
    timeout: float = 600.0  # seconds per ffmpeg call
    device: str = "auto"  # s3fd: auto (CUDA when present), cpu or cuda


def exhaustive(config: CropConfig) -> CropConfig:
    """The same config, detecting on every full-resolution frame (the benchmark's reference)."""
    return dataclasses.replace(config, detect_every=1, detect_size=0)


def face_size(tube: Tube) -> float:
    """Median side (the longer one) of a tube's detected boxes, in clip pixels."""
    return statistics.median(max(b[2] - b[0], b[3] - b[1]) for b in tube.boxes.values())


def select_tubes(scan: Scan, config: CropConfig) -> list[Tube]:
    """The tubes to crop; raises the skip that says why there are none."""
    checked = f"{scan.detected} of {scan.frames} frames checked"
    if not scan.tubes:
        raise Skip(SkipReason.NO_FACE, f"no face detected ({checked}, detector {config.detector})")
    long = long_tubes(scan.tubes, config.min_frames)
    if not long:
        best = max(t.length for t in scan.tubes)
        raise Skip(
            SkipReason.TOO_SHORT,
            f"{len(scan.tubes)} face tube(s), the longest {best} frames (minimum "
            f"{config.min_frames})",
        )
    big = [t for t in long if face_size(t) >= config.min_face]
    if not big:
        best = max(face_size(t) for t in long)
        raise Skip(
            SkipReason.FACE_TOO_SMALL,
            f"the largest face is {best:.0f} px (minimum {config.min_face} px) in a "
            f"{scan.width}x{scan.height} clip",
        )
    return big


def encode_crops(
    src: Path,
    dsts: Sequence[Path],
    tubes: Sequence[Tube],
    boxes: Sequence[tuple[int, int, int, int]],
    size: int,
    timeout: float,
    wavs: Sequence[Path] = (),
    audio: bool = True,
) -> str:
    """One ffmpeg pass writing every tube's crop to its `dsts` path (and, when `wavs` are
    given, its audio as exact-length 16 kHz mono PCM: F * 640 samples, read by the audio
    stage without starting a decoder); `audio=False`: video-only crops, no wavs. Returns
    ffmpeg's stderr.

    The graph: the video split once per tube, each branch trimmed to the tube's frames,
    cropped to its box and scaled to `size`; the audio resampled, split the same way, padded
    and trimmed to the same frames (split again for the wav)."""
    source = ffmpeg.input(str(src))
    videos = source.video.split()
    sounds = source.audio.filter("aresample", SAMPLE_RATE).asplit() if audio else None
    outputs, wav_outputs = [], []  # mp4s first, then wavs, as the options' order
    for k, (tube, (x0, y0, x1, _)) in enumerate(zip(tubes, boxes, strict=True)):
        side = x1 - x0
        video = (
            videos[k]
            .trim(start_frame=tube.start, end_frame=tube.end + 1)
            .setpts("PTS-STARTPTS")
            .filter("crop", side, side, x0, y0, exact=1)
            .filter("scale", size, size, flags="area" if side >= size else "bicubic")
            .filter("setsar", 1)
        )
        if not audio:
            outputs.append(ffmpeg.output(video, str(dsts[k]), **media.X264, **media.BITEXACT))
            continue
        sound = (
            sounds[k]
            .filter("apad")
            .filter(
                "atrim",
                start_sample=tube.start * SAMPLES_PER_FRAME,
                end_sample=(tube.end + 1) * SAMPLES_PER_FRAME,
            )
            .filter("asetpts", "PTS-STARTPTS")
        )
        if wavs:
            both = sound.asplit()
            sound = both[0]
            wav_outputs.append(
                ffmpeg.output(both[1], str(wavs[k]), **{"c:a": "pcm_s16le"}, **media.BITEXACT)
            )
        outputs.append(
            ffmpeg.output(video, sound, str(dsts[k]), **media.X264, **media.AAC, **media.BITEXACT)
        )
    cmd = media.command(ffmpeg.merge_outputs(*outputs, *wav_outputs))
    return media.run_tool(cmd, timeout, f"ffmpeg cropping {src}").stderr.decode(errors="replace")


def check_crop(path: Path, frames: int, stderr: str, audio: bool = True) -> None:
    """The crop has exactly `frames` video frames and audio as long as them, else a Skip.

    Read from the mp4's index (no process started): the video's packet count and
    the audio's presented duration (the edit list trims AAC's padding, so it is
    exact).
    """
    has_audio = audio
    tracks = media.mp4_tracks(path)
    video = next((t for t in tracks if t.kind == "video"), None)
    audio = next((t for t in tracks if t.kind == "audio"), None)
    got = video.packets if video else 0
    if got != frames:
        raise Skip(SkipReason.DECODE_ERROR, f"crop has {got} frames, the tube {frames}", stderr)
    if not has_audio:  # a video-only crop
        return
    seconds = audio.duration if audio else 0.0
    if abs(seconds - frames / FPS) > AV_TOLERANCE:
        raise Skip(
            SkipReason.AV_MISMATCH,
            f"crop audio lasts {seconds:.3f} s, its video {frames / FPS:.3f} s",
            stderr,
        )


def _r(v: float) -> float:
    return round(float(v), 2)


def crop_record(
    key: str,
    clip: dict,
    k: int,
    tube: Tube,
    box: tuple[int, int, int, int],
    scan: Scan,
    config: CropConfig,
) -> dict:
    """The json sidecar of one crop."""
    return {
        "key": key,
        "clip": clip["key"],
        "tube": k,
        "row_key": clip["row"]["key"],
        "video_id": clip.get("video_id"),
        "speaker_id": clip.get("speaker_id"),
        "split": clip.get("split"),
        "source": clip.get("source"),
        "start": round(float(clip.get("start") or 0.0) + tube.start / FPS, 6),
        "start_frame": tube.start,
        "end_frame": tube.end + 1,  # clip frames [start, end)
        "frames": tube.length,
        "fps": FPS,
        "size": config.size,
        "sample_rate": SAMPLE_RATE,
        **({"audio": False} if clip.get("audio") is False else {}),  # video-only
        "box": list(box),
        "clip_size": [scan.width, scan.height],
        "tube_box": [_r(v) for v in tube.box],
        "face_size": _r(face_size(tube)),
        "boxes": [[f, *(_r(v) for v in b)] for f, b in sorted(tube.boxes.items())],
        "detector": config.detector,
        "detect_size": config.detect_size,
        "detect_every": config.detect_every,
        "detected_frames": scan.detected,
    }


def crop_metadata(work: Path) -> dict[str, dict]:
    """key -> json of every complete crop in `work` (the json is written after its mp4)."""
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((Path(work) / OUT_DIR).glob("*.json"))
    }


def crop_items(work: Path, *fields: str) -> list[Item]:
    """Items over the complete crops (for coeffs/audio): payload `frames` + `fields`, grouped
    by the manifest row so `--part` keeps every stage of one source together."""
    return [
        Item(
            key,
            {"frames": int(meta["frames"]), **{f: meta.get(f) for f in fields}},
            group=meta.get("row_key") or key,
        )
        for key, meta in crop_metadata(work).items()
    ]


class CropStage:
    """FOMM face crops, one per long-enough face tube (items: complete clips)."""

    name = "crop"
    out_dir = OUT_DIR

    def __init__(self, config: CropConfig):
        from fd2talk.pipeline.backends.detect import check_detector

        check_detector(config.detector, config.face_model, config.s3fd_weights)
        self.config = config
        self._detector = None

    def items(self, work: Path) -> list[Item]:
        return [
            Item(key, meta, group=meta["row"]["key"]) for key, meta in clip_metadata(work).items()
        ]

    def setup(self) -> None:
        from fd2talk.pipeline.backends.detect import make_detector

        if self._detector is None:
            cfg = self.config
            self._detector = make_detector(
                cfg.detector, cfg.face_model, cfg.s3fd_weights, cfg.device
            )

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __getstate__(self) -> dict:  # worker processes build their own detector
        return {"config": self.config, "_detector": None}

    def process(self, item: Item, work: Path) -> list[str]:
        cfg = self.config
        self.setup()
        src = Path(work) / CLIPS_DIR / f"{item.key}.mp4"
        clip = item.payload
        if clip.get("width") and clip.get("height"):  # the clip json says: no probe needed
            width, height = int(clip["width"]), int(clip["height"])
        else:
            info = media.probe(src, need_audio=bool(clip.get("audio", True)), timeout=cfg.timeout)
            width, height = info.width, info.height
        scan = scan_faces(
            src, width, height, cfg, self._detector.detect, keyframes=Keyframes.of_clip(clip)
        )
        tubes = select_tubes(scan, cfg)
        boxes = [crop_box(t.box, width, height, cfg.increase) for t in tubes]
        keys = [f"{item.key}_t{k}" for k in range(len(tubes))]
        finals = [Path(work) / OUT_DIR / f"{key}.mp4" for key in keys]
        audio = bool(clip.get("audio", True))  # False: a video-only row (no wav either)
        wav_finals = [f.with_suffix(".wav") for f in finals] if audio else []
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(atomic.atomic_path(f)) for f in finals]
            wavs = [stack.enter_context(atomic.atomic_path(f)) for f in wav_finals]
            stderr = encode_crops(src, tmps, tubes, boxes, cfg.size, cfg.timeout, wavs, audio)
            for tmp, tube in zip(tmps, tubes, strict=True):
                check_crop(tmp, tube.length, stderr, audio)
            for wav, tube in zip(wavs, tubes if audio else [], strict=True):
                got = len(media.read_wav(wav))  # a damaged wav raises Skip(DECODE_ERROR)
                if got != tube.length * SAMPLES_PER_FRAME:
                    raise Skip(
                        SkipReason.DECODE_ERROR,
                        f"{wav.name}: {got} samples, the tube "
                        f"needs {tube.length * SAMPLES_PER_FRAME}",
                        stderr,
                    )
        outputs = []
        for k, (key, tube, box) in enumerate(zip(keys, tubes, boxes, strict=True)):
            atomic.write_json(
                Path(work) / OUT_DIR / f"{key}.json",
                crop_record(key, item.payload, k, tube, box, scan, cfg),
            )
            outputs += [
                f"{OUT_DIR}/{key}.mp4",
                *([f"{OUT_DIR}/{key}.wav"] if audio else []),
                f"{OUT_DIR}/{key}.json",
            ]
        return outputs
