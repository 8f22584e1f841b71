"""Stage `crop` (and its detectors): FOMM face tubes -> 256x256 crops with audio in sync.

Generated media: scikit-image's astronaut (a real face photo) composited on a
plain background, moving in; two faces side by side; a face that leaves; no face;
a tiny face; a face seen too briefly. The crop box must hold all 478 MediaPipe
landmarks on every frame; sparse, downscaled detection must give the same tubes
as detecting every full-resolution frame; decoding only the clips' keyframes
(and the gaps to fill) must give byte-identical crops to decoding every frame.
The same on the shared real clips.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest
from helpers import SHARED_CLIPS, ffmpeg_video, frames_to_video, s3fd_standin
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core import media
from fd2talk.core.schema import CROP_SIZE, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends.detect import S3FD_FILE, S3FD_URL, MediaPipeDetector, S3FDDetector
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage, encode_clip
from fd2talk.pipeline.stages.crop import CropConfig, CropStage, exhaustive
from fd2talk.pipeline.stages.scan import Keyframes, scan_faces
from fd2talk.pipeline.stages.tubes import crop_box, iou

BG = 90  # grey background level
FACE_ENTERS = 17  # first frame of the moving face (between two sparse detections)
FACE_LEAVES = 43  # first frame without the face in "leaves" (between two keyframes)


def _face_patch(scale: float = 1.0) -> np.ndarray:
    """The astronaut's face and helmet, (230, 230, 3) uint8 at scale 1."""
    import cv2
    from skimage import data

    patch = data.astronaut()[20:250, 110:340]
    if scale != 1.0:
        patch = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(patch)


def _video(path, n, w, h, placements, audio=None):
    """placements(f) -> [(patch, x, y), ...] for frame f; writes an mp4 with a chirp."""
    frames = np.full((n, h, w, 3), BG, np.uint8)
    for f in range(n):
        for patch, x, y in placements(f):
            frames[f, y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    t = np.arange(n * SAMPLES_PER_FRAME) / SAMPLE_RATE
    if audio is None:  # a chirp: every instant differs, so an audio offset shows
        audio = 0.3 * np.sin(2 * np.pi * (150 * t + 300 * t**2)).astype(np.float32)
    return frames_to_video(path, frames, audio=audio)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A work dir with clips and crops of every generated case (stages run once)."""
    root = tmp_path_factory.mktemp("crop")
    face, tiny = _face_patch(), _face_patch(0.4)
    n = 75
    _video(
        root / "moving.mp4",
        n,
        480,
        360,  # enters at frame 17, drifts slowly
        lambda f: (
            [(face, 20 + round(0.7 * f), 60 + round(6 * np.sin(f / 9)))] if f >= FACE_ENTERS else []
        ),
    )
    _video(
        root / "two.mp4",
        60,
        640,
        360,
        lambda f: [(face, 60 + f // 3, 60), (face, 350 - f // 4, 70)],
    )
    _video(root / "tiny.mp4", 50, 160, 120, lambda f: [(tiny, 60 + f // 10, 20)])
    _video(
        root / "brief.mp4",
        50,
        320,
        240,
        lambda f: [(_face_patch(0.8), 70, 20)] if 10 <= f < 25 else [],
    )
    _video(
        root / "leaves.mp4",
        70,
        320,
        240,
        lambda f: [(_face_patch(0.8), 50 + f // 4, 20)] if f < FACE_LEAVES else [],
    )
    ffmpeg_video(root / "noface.mp4", seconds=2.0, size="320x240")
    manifest = root / "manifest.csv"
    manifest.write_text(
        "key,path\n"
        + "".join(
            f"{k},{root / k}.mp4\n" for k in ("moving", "two", "leaves", "tiny", "brief", "noface")
        )
    )
    work = root / "work"
    assert run_stage(ClipStage(ClipConfig(manifest=str(manifest))), work, progress=False).ok
    summary = run_stage(CropStage(CropConfig()), work, progress=False)
    return work, summary


def _status(work, key):
    return json.loads((work / "status" / "crop" / f"{key}.json").read_text())


def _landmarks(frames: np.ndarray, face_model, num_faces: int = 1) -> list[np.ndarray]:
    """MediaPipe FaceLandmarker on each frame: a list of (faces, 478, 2) pixel arrays."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(face_model)),
        num_faces=num_faces,
        running_mode=vision.RunningMode.VIDEO,
    )  # tracks faces from frame to frame
    out = []
    h, w = frames.shape[1:3]
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for f, frame in enumerate(frames):
            res = landmarker.detect_for_video(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)),
                f * 1000 // FPS,
            )
            out.append(
                np.array(
                    [[(p.x * w, p.y * h) for p in face] for face in res.face_landmarks]
                ).reshape(-1, 478, 2)
            )
    return out


def _check_crop_files(work, key):
    """Output properties of one crop; returns its json record."""
    mp4 = work / "crops" / f"{key}.mp4"
    meta = json.loads(mp4.with_suffix(".json").read_text())
    info = media.probe(mp4)
    assert (info.width, info.height) == (CROP_SIZE, CROP_SIZE) == (meta["size"],) * 2
    assert info.fps == FPS and (info.sample_rate, info.channels) == (SAMPLE_RATE, 1)
    assert media.count_frames(mp4) == meta["frames"] == meta["end_frame"] - meta["start_frame"]
    samples = media.read_audio(mp4, 60).size
    assert abs(samples / SAMPLE_RATE - meta["frames"] / FPS) <= 1.5 / FPS
    x0, y0, x1, y1 = meta["box"]
    w, h = meta["clip_size"]
    assert x1 - x0 == y1 - y0 and 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h
    assert meta["key"] == key and meta["detector"] == "mediapipe" and meta["fps"] == FPS
    assert all(meta["start_frame"] <= b[0] < meta["end_frame"] for b in meta["boxes"])
    return meta


def _check_landmarks_inside(work, meta, face_model, num_faces=1):
    """All 478 landmarks of the tube's face lie inside the crop box on every tube frame."""
    clip = work / "clips" / f"{meta['clip']}.mp4"
    w, h = meta["clip_size"]
    frames = media.read_frames(clip, w, h, 120)[meta["start_frame"] : meta["end_frame"]]
    x0, y0, x1, y1 = meta["box"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    for f, faces in enumerate(_landmarks(frames, face_model, num_faces)):
        assert len(faces), f"no landmarks on frame {meta['start_frame'] + f}"
        lm = faces[np.argmin([np.hypot(*(p.mean(0) - (cx, cy))) for p in faces])]
        assert lm[:, 0].min() >= x0 and lm[:, 0].max() <= x1, (f, lm[:, 0].min(), meta["box"])
        assert lm[:, 1].min() >= y0 and lm[:, 1].max() <= y1, (f, lm[:, 1].min(), meta["box"])
    return frames


def test_moving_face_crop(generated, face_model):
    work, summary = generated
    assert summary.failed == 0
    assert _status(work, "moving_f000")["outputs"] == [
        "crops/moving_f000_t0.mp4",
        "crops/moving_f000_t0.wav",
        "crops/moving_f000_t0.json",
    ]
    meta = _check_crop_files(work, "moving_f000_t0")
    # The PCM beside the crop has exactly 640 samples a frame and is the crop's audio.
    pcm = media.read_wav(work / "crops" / "moving_f000_t0.wav")
    assert len(pcm) == meta["frames"] * 640
    aac = media.read_audio(work / "crops" / "moving_f000_t0.mp4", 60)[: len(pcm)]
    assert np.corrcoef(pcm[: len(aac)], aac)[0, 1] > 0.95
    # The face enters between two sparse detections: the gap was filled in, the start is exact.
    assert (meta["start_frame"], meta["end_frame"]) == (FACE_ENTERS, 75)
    assert meta["detected_frames"] < 75 and meta["clip"] == "moving_f000"
    assert meta["video_id"] == "moving.mp4" and meta["start"] == pytest.approx(FACE_ENTERS / FPS)
    frames = _check_landmarks_inside(work, meta, face_model)
    # The crop shows the tube's frames (video in sync): each crop frame matches its clip
    # frame cropped and resized, better than the frames 3 before or after.
    import cv2

    x0, y0, x1, y1 = meta["box"]
    crop = media.read_frames(work / "crops" / "moving_f000_t0.mp4", CROP_SIZE, CROP_SIZE, 60)
    ref = np.stack(
        [
            cv2.resize(f[y0:y1, x0:x1], (CROP_SIZE,) * 2, interpolation=cv2.INTER_AREA)
            for f in frames
        ]
    ).astype(np.float32)
    for k in (5, 20, 40):
        err = [np.abs(crop[k] - ref[k + d]).mean() for d in (-3, 0, 3)]
        assert err[1] < 4 and err[1] < min(err[0], err[2]), err
    # The audio is the tube's span of the clip's audio (correlation peaks at zero lag).
    a_crop = media.read_audio(work / "crops" / "moving_f000_t0.mp4", 60)
    a_clip = media.read_audio(work / "clips" / "moving_f000.mp4", 60)
    s0, n = FACE_ENTERS * SAMPLES_PER_FRAME, 30 * SAMPLES_PER_FRAME

    def corr(lag):
        a, b = a_crop[:n], a_clip[s0 + lag : s0 + lag + n]
        return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))

    assert corr(0) > 0.9 and corr(0) > corr(160) + 0.2 and corr(0) > corr(-160) + 0.2


def test_two_people_give_two_crops(generated, face_model):
    work, _ = generated
    metas = [_check_crop_files(work, f"two_f000_t{k}") for k in (0, 1)]
    assert not (work / "crops" / "two_f000_t2.json").exists()
    b0, b1 = (m["box"] for m in metas)
    assert iou(b0, b1) < 0.1
    for m in metas:
        assert (m["start_frame"], m["end_frame"]) == (0, 60)
        _check_landmarks_inside(work, m, face_model, num_faces=2)


def test_face_leaving_crop(generated, face_model):
    work, _ = generated
    meta = _check_crop_files(work, "leaves_f000_t0")
    assert (meta["start_frame"], meta["end_frame"]) == (0, FACE_LEAVES)  # the end is exact
    assert not (work / "crops" / "leaves_f000_t1.json").exists()
    _check_landmarks_inside(work, meta, face_model)


def _tubes(scan):
    return [(t.start, t.end, t.initial, t.box, t.boxes) for t in scan.tubes]


def _strip_keyframes(src_work, dst_work, keys):
    """Copy clips into a new work dir with json that no longer says where the keyframes are
    (nor the size): the crop stage then decodes every frame and probes the clip."""
    (dst_work / "clips").mkdir(parents=True)
    for key in keys:
        shutil.copy(src_work / "clips" / f"{key}.mp4", dst_work / "clips")
        meta = json.loads((src_work / "clips" / f"{key}.json").read_text())
        for field in ("keyint", "last_keyframe", "width", "height"):
            del meta[field]
        (dst_work / "clips" / f"{key}.json").write_text(json.dumps(meta))


def _same_crop_outputs(work_a, work_b, keys):
    """Both work dirs hold the same crop files, byte for byte, and the same skips."""
    names = sorted(p.name for key in keys for p in (work_a / "crops").glob(f"{key}_t*"))
    assert names == sorted(p.name for key in keys for p in (work_b / "crops").glob(f"{key}_t*"))
    for name in names:
        assert (work_a / "crops" / name).read_bytes() == (work_b / "crops" / name).read_bytes(), (
            name
        )
    for key in keys:
        a, b = (
            json.loads((w / "status" / "crop" / f"{key}.json").read_text())
            for w in (work_a, work_b)
        )
        assert (a["status"], a.get("reason"), a.get("detail")) == (
            b["status"],
            b.get("reason"),
            b.get("detail"),
        )
    return names


def test_keyframe_decoding_gives_byte_identical_crops(generated, face_model, tmp_path):
    """The fixture's crops came from decoding keyframes only; decoding every frame agrees."""
    work, _ = generated
    keys = ["moving_f000", "two_f000", "leaves_f000", "tiny_f000", "brief_f000", "noface_f000"]
    with MediaPipeDetector(face_model) as det:
        for key in ("moving_f000", "two_f000", "leaves_f000"):
            clip = work / "clips" / f"{key}.mp4"
            meta = json.loads(clip.with_suffix(".json").read_text())
            w, h = meta["width"], meta["height"]
            keyed = scan_faces(
                clip, w, h, CropConfig(), det.detect, keyframes=Keyframes.of_clip(meta)
            )
            stream = scan_faces(clip, w, h, CropConfig(), det.detect)
            assert keyed.keyframes and not stream.keyframes
            assert keyed.read < stream.read == stream.frames == keyed.frames == meta["frames"]
            assert keyed.detected == stream.detected and _tubes(keyed) == _tubes(stream)
    work2 = tmp_path / "work"
    _strip_keyframes(work, work2, keys)
    assert run_stage(CropStage(CropConfig()), work2, progress=False).ok
    assert len(_same_crop_outputs(work, work2, keys)) == 12  # moving 1, two 2, leaves 1 (x3)


@pytest.mark.parametrize(
    "key, reason, detail",
    [
        ("noface_f000", "no_face", "no face detected"),
        ("tiny_f000", "face_too_small", "minimum 64 px"),
        ("brief_f000", "too_short", "the longest 15 frames (minimum 25)"),
    ],
)
def test_skips(generated, key, reason, detail):
    work, summary = generated
    rec = _status(work, key)
    assert rec["status"] == "skipped" and rec["reason"] == reason and detail in rec["detail"]
    assert not list((work / "crops").glob(f"{key}_t*"))
    failures = [
        json.loads(line)
        for line in (work / "status" / "crop" / "failures.jsonl").read_text().splitlines()
    ]
    assert {r["key"]: r["reason"] for r in failures}[key] == reason
    assert summary.skipped[reason] == 1


def test_rerun_is_a_noop_and_outputs_are_deterministic(generated, tmp_path):
    work, _ = generated
    before = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (work / "crops").iterdir() if p.is_file()
    }
    again = run_stage(CropStage(CropConfig()), work, progress=False)
    assert (again.already, again.done, sum(again.skipped.values())) == (again.total, 0, 0)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before
    # A fresh run on a copy of one clip writes byte-identical outputs.
    work2 = tmp_path / "work2"
    (work2 / "clips").mkdir(parents=True)
    for ext in ("mp4", "json"):
        shutil.copy(work / "clips" / f"two_f000.{ext}", work2 / "clips")
    assert run_stage(CropStage(CropConfig()), work2, progress=False).done == 1
    for k in (0, 1):
        for ext in ("mp4", "json"):
            name = f"two_f000_t{k}.{ext}"
            assert (work2 / "crops" / name).read_bytes() == (work / "crops" / name).read_bytes()


def _compare_sparse_with_exhaustive(clip, face_model):
    """Sparse detection on downscaled frames vs every frame (downscaled, and full size)."""
    info = media.probe(clip)
    w, h = info.width, info.height
    with MediaPipeDetector(face_model) as det:
        sparse = scan_faces(clip, w, h, CropConfig(), det.detect)
        every = scan_faces(clip, w, h, CropConfig(detect_every=1), det.detect)
        full = scan_faces(clip, w, h, exhaustive(CropConfig()), det.detect)
    assert full.detected == full.frames == every.detected == sparse.frames
    assert sparse.detected < full.detected / 2
    spans = [(t.start, t.end) for t in sparse.tubes]
    assert (
        spans == [(t.start, t.end) for t in every.tubes] == [(t.start, t.end) for t in full.tubes]
    )
    for s, e, f in zip(sparse.tubes, every.tubes, full.tubes, strict=True):
        # Skipping frames: the same boxes, up to the detector's jitter between frames.
        assert iou(s.box, e.box) > 0.9
        side = max(e.box[2] - e.box[0], e.box[3] - e.box[1])
        assert np.abs(np.subtract(s.box, e.box)).max() <= max(6.0, 0.03 * side), (s.box, e.box)
        # Skipping frames and downscaling: the detector sees other pixels, boxes move a
        # little more (worst case here: 5 px on a 110 px face in the two-face video).
        assert iou(s.box, f.box) > 0.85
        assert iou(crop_box(s.box, w, h), crop_box(f.box, w, h)) > 0.85
    return sparse, full


def test_sparse_downscaled_detection_matches_every_frame(generated, face_model):
    work, _ = generated
    for key in ("moving_f000", "two_f000"):
        sparse, _ = _compare_sparse_with_exhaustive(work / "clips" / f"{key}.mp4", face_model)
        assert len(sparse.tubes) == {"moving_f000": 1, "two_f000": 2}[key]


def _blob_detector(frame):
    """Bright squares on a dark frame: their bounding boxes (an exact, known detector)."""
    from scipy import ndimage

    labels, _ = ndimage.label(frame.mean(axis=2) > 128)
    return [
        (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop, 1.0)
        for sl in ndimage.find_objects(labels)
    ]


def _square_spots(f: int) -> list[tuple[int, int, int]]:
    """(x, y, side) of the squares on frame `f`: one from 17 to 41 moving right, one from 30
    on moving down, which jumps left at 47."""
    out = []
    if 17 <= f <= 41:
        out.append((40 + f // 2, 40, 40))
    if 30 <= f:
        out.append((200 if f < 47 else 60, 150 + (f - 30) // 4, 40))
    return out


def _squares(f: int) -> list:
    """`_video` placements of frame `f`'s white squares."""
    return [(np.full((s, s, 3), 255, np.uint8), x, y) for x, y, s in _square_spots(f)]


def test_sparse_scan_fills_gaps_where_faces_change(tmp_path):
    """Squares appear, vanish and jump between sparse detections; tube spans stay exact."""
    n, truth = 60, {}

    def squares(f):
        truth[f] = _square_spots(f)
        return _squares(f)

    clip = _video(tmp_path / "squares.mp4", n, 320, 240, squares)
    cfg = CropConfig(detect_size=160, detect_every=5)
    scan = scan_faces(clip, 320, 240, cfg, _blob_detector)
    # 13 sparse detections (every 5th + the last) + 4 gaps of 4 frames where things change.
    assert scan.frames == n and scan.detected == 13 + 4 * 4
    assert [(t.start, t.end) for t in scan.tubes] == [(17, 41), (30, 46), (47, 59)]
    for tube in scan.tubes:
        for f, box in tube.boxes.items():
            x, y, side = min(truth[f], key=lambda sq: abs(sq[0] - box[0]) + abs(sq[1] - box[1]))
            assert np.allclose(box, (x, y, x + side, y + side), atol=2.5), (f, box)
    every = scan_faces(clip, 320, 240, CropConfig(detect_size=160, detect_every=1), _blob_detector)
    assert [(t.start, t.end) for t in every.tubes] == [(17, 41), (30, 46), (47, 59)]
    for s_tube, e_tube in zip(scan.tubes, every.tubes, strict=True):
        assert np.allclose(s_tube.box, e_tube.box, atol=2.5)


def test_keyframe_scan_equals_streaming_scan(tmp_path):
    """Squares appear, vanish and jump between keyframes: decoding only the keyframes (and
    seeking into the gaps to fill) gives exactly the tubes of decoding every frame."""
    n = 60
    src = _video(tmp_path / "squares.mp4", n, 320, 240, _squares)  # x264's default GOP
    clip = tmp_path / "clip.mp4"  # the clip stage's encoding: keyframes 0, 5, ..., 55, 59
    encode_clip(src, clip, 0.0, n, 60)
    no_last = tmp_path / "no_last.mp4"  # keyframes 0, 5, ..., 55: the last frame is sought
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            *media.as_args(media.x264(5)),
            "-an",
            str(no_last),
        ],
        check=True,
    )
    assert media.count_frames(clip) == media.count_frames(no_last) == n

    def scan(path, every, keyframes=None):
        cfg = CropConfig(detect_size=160, detect_every=every)
        return scan_faces(path, 320, 240, cfg, _blob_detector, keyframes=keyframes)

    reference = {every: scan(clip, every) for every in (3, 5, 10)}
    assert [(t.start, t.end) for t in reference[5].tubes] == [(17, 41), (30, 46), (47, 59)]
    assert reference[5].detected == 13 + 4 * 4 and not reference[5].keyframes
    for path, last in ((clip, True), (no_last, False)):
        for every in (5, 10):
            got = scan(path, every, Keyframes(n, 5, last))
            assert got.keyframes, (path.name, every)
            assert _tubes(got) == _tubes(reference[every]), (path.name, every)
            assert got.detected == reference[every].detected and got.frames == n
            assert got.read < n
        # detect_every not a multiple of the keyframe interval: every frame is decoded
        got = scan(path, 3, Keyframes(n, 5, last))
        assert not got.keyframes and _tubes(got) == _tubes(reference[3])
    # Keyframes not where the json says (x264's default GOP; or the last frame is no
    # keyframe after all; or it is one): found out, and every frame is decoded instead.
    for path, keyframes in (
        (src, Keyframes(n, 5, True)),
        (no_last, Keyframes(n, 5, True)),
        (clip, Keyframes(n, 5, False)),
    ):
        got = scan(path, 10, keyframes)
        assert not got.keyframes and got.read == n, (path.name, keyframes)
        assert _tubes(got) == _tubes(reference[10])


def test_keyframes_of_clip_json():
    assert Keyframes.of_clip({"frames": 12}) is None  # clips of an older version
    kf = Keyframes.of_clip({"frames": 12, "keyint": 5, "last_keyframe": True, "fps": 25})
    assert kf == Keyframes(12, 5, True, 25.0) and kf.indices() == [0, 5, 10, 11]
    assert Keyframes(11, 5, True).indices() == [0, 5, 10] == Keyframes(12, 5, False).indices()
    assert Keyframes(1, 5, True).indices() == [0]


def test_check_crop_rejects_wrong_lengths(tmp_path):
    from fd2talk.core.skip import Skip, SkipReason
    from fd2talk.pipeline.stages.crop import check_crop

    frames = np.full((50, 64, 64, 3), 128, np.uint8)
    ok = frames_to_video(tmp_path / "ok.mp4", frames, audio=np.zeros(50 * 640, np.float32))
    check_crop(ok, 50, "")
    with pytest.raises(Skip) as e:
        check_crop(ok, 51, "")
    assert e.value.reason is SkipReason.DECODE_ERROR
    short = frames_to_video(tmp_path / "short.mp4", frames, audio=np.zeros(40 * 640, np.float32))
    with pytest.raises(Skip) as e:
        check_crop(short, 50, "")
    assert e.value.reason is SkipReason.AV_MISMATCH
    # check_crop reads the mp4's index: the same packet counts and durations as ffprobe.
    for path in (ok, short):
        out = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-count_packets",
                "-show_entries",
                "stream=codec_type,nb_read_packets,duration",
                "-of",
                "json",
                str(path),
            ],
            capture_output=True,
            check=True,
        ).stdout
        want = [
            (s["codec_type"], int(s["nb_read_packets"]), float(s["duration"]))
            for s in json.loads(out)["streams"]
        ]
        got = [(t.kind, t.packets, t.duration) for t in media.mp4_tracks(path)]
        assert [g[:2] for g in got] == [w[:2] for w in want]
        assert np.allclose([g[2] for g in got], [w[2] for w in want], atol=1e-3)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(ok.read_bytes()[:-200])  # the index (at the end) is cut short
    with pytest.raises(Skip) as e:
        check_crop(cut, 50, "")
    assert e.value.reason is SkipReason.DECODE_ERROR and "no complete mp4" in e.value.detail


def test_detect_dims():
    from fd2talk.pipeline.stages.scan import detect_dims

    assert detect_dims(1920, 1080, 320) == (320, 180)
    assert detect_dims(360, 640, 320) == (180, 320)
    assert detect_dims(256, 200, 320) == (256, 200)  # never upscaled
    assert detect_dims(1920, 1080, 0) == (1920, 1080)  # 0: full resolution


def test_cli_crop(generated, tmp_path):
    work, _ = generated
    work2 = tmp_path / "work"
    (work2 / "clips").mkdir(parents=True)
    for ext in ("mp4", "json"):
        shutil.copy(work / "clips" / f"moving_f000.{ext}", work2 / "clips")
    result = CliRunner().invoke(
        app, ["crop", str(work2), "--detect-every", "3", "--min-frames", "10", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((work2 / "status" / "crop" / "config.json").read_text())
    assert (config["detect_every"], config["min_frames"], config["detector"]) == (
        3,
        10,
        "mediapipe",
    )
    meta = json.loads((work2 / "crops" / "moving_f000_t0.json").read_text())
    assert (meta["start_frame"], meta["end_frame"], meta["detect_every"]) == (FACE_ENTERS, 75, 3)
    # s3fd without weights: a user error naming the file and where to get it.
    result = CliRunner().invoke(
        app,
        [
            "crop",
            str(tmp_path / "w3"),
            "--detector",
            "s3fd",
            "--s3fd-weights",
            str(tmp_path / "nope.pth"),
            "--quiet",
        ],
    )
    assert isinstance(result.exception, PrepError)
    assert "nope.pth" in str(result.exception) and S3FD_URL in str(result.exception)


# S3FD: the published layout of face-alignment's s3fd-619a316812.pth (net_s3fd.py).
S3FD_LAYERS = (
    [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
    + ["fc6", "fc7", "conv6_1", "conv6_2", "conv7_1", "conv7_2"]
    + [
        f"{src}_mbox_{kind}"
        for src in ("conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2")
        for kind in ("conf", "loc")
    ]
)
S3FD_KEYS = {f"{n}.{p}" for n in S3FD_LAYERS for p in ("weight", "bias")} | {
    "conv3_3_norm.weight",
    "conv4_3_norm.weight",
    "conv5_3_norm.weight",
}


def test_s3fd_runs_face_alignment_on_a_local_state_dict(tmp_path, monkeypatch):
    """The detector is face-alignment's own S3FD, given a local file: a stand-in of the
    published layout whose only faces are the stride-128 level's anchors (512 px), moved by
    the box offsets in the file: the library's decoding and NMS give exactly those boxes."""
    import torch

    path = s3fd_standin(tmp_path / S3FD_FILE, level=5, loc=(1.0, -1.0, np.log(0.5) / 0.2, 0.0))
    state = torch.load(path, weights_only=True)
    assert set(state) == S3FD_KEYS and len(state) == 65
    assert state["conv3_3_norm_mbox_conf.weight"].shape == (4, 256, 3, 3)
    assert state["fc6.weight"].shape == (1024, 512, 3, 3)
    monkeypatch.setenv("FD2TALK_S3FD_WEIGHTS", str(path))
    frame = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    with S3FDDetector(device="cpu") as det:  # the path from the environment
        assert det.device == "cpu"
        loaded = det._detector.face_detector.state_dict()
        assert all(torch.equal(v, state[k]) for k, v in loaded.items())
        dets = det.detect(frame)
    # anchors at (64 + 128 i, 64 + 128 j), 512 wide; centre + (51.2, -51.2), width halved,
    # height kept; overlapping boxes are suppressed (IoU > 0.3), the rest kept
    assert dets, "the stride-128 anchors score 1.0"
    for x0, y0, x1, y1, score in dets:
        assert score == pytest.approx(1.0, abs=1e-4)
        assert (x1 - x0, y1 - y0) == pytest.approx((256.0, 512.0), abs=1e-3)
        cx, cy = (x0 + x1) / 2 - 51.2 - 64, (y0 + y1) / 2 + 51.2 - 64
        assert (cx / 128, cy / 128) == pytest.approx((round(cx / 128), round(cy / 128)), abs=1e-5)
    # Missing or wrong files are user errors that say what to do.
    monkeypatch.delenv("FD2TALK_S3FD_WEIGHTS")
    with pytest.raises(PrepError, match="FD2TALK_S3FD_WEIGHTS"):
        S3FDDetector(device="cpu")
    with pytest.raises(PrepError, match=S3FD_FILE):
        S3FDDetector(tmp_path / "missing.pth", device="cpu")
    torch.save({k: v for k, v in state.items() if not k.startswith("fc7")}, tmp_path / "bad.pth")
    with pytest.raises(PrepError, match="not face-alignment's S3FD"):
        S3FDDetector(tmp_path / "bad.pth", device="cpu")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(PrepError, match="not face-alignment's S3FD"):
        S3FDDetector(tmp_path / "text.pth", device="cpu")


def test_s3fd_stand_in_with_no_face_finds_none(tmp_path):
    path = s3fd_standin(tmp_path / S3FD_FILE, logit=-10.0)  # every anchor background
    with S3FDDetector(path, device="cpu") as det:
        assert det.detect(np.zeros((64, 64, 3), np.uint8)) == []


@pytest.mark.slow
def test_shared_media(shared_media, face_model, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "key,path\n"
        + "".join(f"{name.split('_')[1]},{shared_media / name}\n" for name in SHARED_CLIPS)
    )
    work = tmp_path / "work"
    assert run_stage(ClipStage(ClipConfig(manifest=str(manifest))), work, progress=False).ok
    summary = run_stage(CropStage(CropConfig()), work, progress=False)
    assert summary.done == 3 and summary.ok
    # Decoding only keyframes (as above) and decoding every frame: byte-identical crops.
    keys = [name.split("_")[1] + "_f000" for name in SHARED_CLIPS]
    _strip_keyframes(work, tmp_path / "work2", keys)
    assert run_stage(CropStage(CropConfig()), tmp_path / "work2", progress=False).done == 3
    assert len(_same_crop_outputs(work, tmp_path / "work2", keys)) == 9  # mp4, wav, json
    with MediaPipeDetector(face_model) as det:
        for name in SHARED_CLIPS:
            key = name.split("_")[1] + "_f000"
            clip_meta = json.loads((work / "clips" / f"{key}.json").read_text())
            keyed = scan_faces(
                work / "clips" / f"{key}.mp4",
                clip_meta["width"],
                clip_meta["height"],
                CropConfig(),
                det.detect,
                keyframes=Keyframes.of_clip(clip_meta),
            )
            assert keyed.keyframes and keyed.read < clip_meta["frames"] / 2
            assert len(list((work / "crops").glob(f"{key}_t*.json"))) == 1
            meta = _check_crop_files(work, f"{key}_t0")
            clip_frames = json.loads((work / "clips" / f"{key}.json").read_text())["frames"]
            assert meta["frames"] >= 0.95 * clip_frames
            assert meta["detected_frames"] < clip_frames / 2
            _check_landmarks_inside(work, meta, face_model)
            # The sparse, downscaled tube (in the json) vs detecting every full-size frame.
            w, h = meta["clip_size"]
            full = scan_faces(
                work / "clips" / f"{key}.mp4", w, h, exhaustive(CropConfig()), det.detect
            )
            assert full.detected == clip_frames and len(full.tubes) == 1
            tube = full.tubes[0]
            assert (tube.start, tube.end + 1) == (meta["start_frame"], meta["end_frame"])
            assert iou(meta["tube_box"], tube.box) > 0.9
            side = max(tube.box[2] - tube.box[0], tube.box[3] - tube.box[1])
            assert np.abs(np.subtract(meta["tube_box"], tube.box)).max() <= 0.03 * side
            assert iou(meta["box"], crop_box(tube.box, w, h)) > 0.9
