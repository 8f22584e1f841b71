"""The demo dataset: both speech paths, deterministic bytes, formats, and a mouth that
MediaPipe FaceLandmarker reads as `jawOpen` following the speech envelope."""

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from fd2talk.cli.prep import app
from fd2talk.core import media
from fd2talk.core.skip import PrepError
from fd2talk.model.demo import face_motion, generator, portraits, speech, tracks, variants
from fd2talk.pipeline.sources.manifest import read_manifest

# Measured on 60 videos (espeak-ng and synthetic; 20 of 6 s, 40 of 4 s over seeds 0-4):
# r(jawOpen, opening) = 0.92-0.98 on the sources, 0.92-0.94 on the 256x256 crops of the
# `crop` stage; jawOpen spans ~0.01-0.55 (95th - 5th percentile >= 0.42 in every video).
MIN_R = 0.75
MIN_JAW_RANGE = 0.25  # 95th - 5th percentile of jawOpen over a clip

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize(
    "use_espeak",
    [pytest.param(True, marks=needs_espeak, id="espeak"), pytest.param(False, id="synthetic")],
)
def test_landmarker_reads_the_mouth_following_the_speech(tmp_path, face_model, use_espeak):
    cfg = variants.DemoConfig(n_videos=1, seconds=4.0, seed=3, use_espeak=use_espeak)
    manifest = generator.make_demo(tmp_path, cfg)
    video = manifest.parent / "demo000.mp4"
    info = media.probe(video)
    assert (info.width, info.height, info.fps) == (512, 512, 25.0)
    assert (info.audio_codec, info.sample_rate, info.channels) == ("aac", 16000, 1)
    assert media.count_frames(video) == 100
    assert abs(info.audio_duration - 4.0) < 0.07
    source = "espeak-ng" if use_espeak else "synthetic"
    assert f'"speech": "{source}"' in (manifest.parent / generator.CONFIG_JSON).read_text()

    jaw, gap, opening = tracks.jaw_open_track(video, face_model)  # (100,) each
    assert not np.isnan(jaw).any()  # the face is found in every frame
    assert np.corrcoef(jaw, opening)[0, 1] >= MIN_R
    assert np.corrcoef(gap, opening)[0, 1] >= MIN_R
    assert np.percentile(jaw, 95) - np.percentile(jaw, 5) >= MIN_JAW_RANGE
    # the saved ground truth is the same envelope (25 fps video: same frame times)
    truth = tracks.ground_truth_openings(tmp_path)["demo000"]
    assert truth.shape == (100,) and truth.dtype == np.float32
    assert np.abs(truth - opening).max() < 0.1  # after AAC encoding and decoding
    assert np.corrcoef(jaw, truth)[0, 1] >= MIN_R
    # speech has pauses (mouth closed) and loud parts (mouth open)
    assert (truth < 0.05).sum() >= 5 and (truth > 0.8).sum() >= 10


@pytest.mark.parametrize(
    "use_espeak",
    [pytest.param(True, marks=needs_espeak, id="espeak"), pytest.param(False, id="synthetic")],
)
def test_same_seed_same_bytes(tmp_path, use_espeak):
    cfg = variants.DemoConfig(n_videos=2, seconds=1.5, seed=7, use_espeak=use_espeak)
    a = _files(generator.make_demo(tmp_path / "a", cfg).parent)
    b = _files(generator.make_demo(tmp_path / "b", cfg, workers=1).parent)
    assert sorted(a) == [
        "demo.json",
        "demo000.mp4",
        "demo000.opening.npy",
        "demo001.mp4",
        "demo001.opening.npy",
        "manifest.csv",
    ]
    assert a == b
    other = variants.DemoConfig(n_videos=1, seconds=1.5, seed=8, use_espeak=use_espeak)
    c = _files(generator.make_demo(tmp_path / "c", other).parent)
    assert c["demo000.mp4"] != a["demo000.mp4"]
    assert c["demo000.opening.npy"] != a["demo000.opening.npy"]


def test_rerun_skips_and_resumes_and_refuses_other_settings(tmp_path):
    cfg = variants.DemoConfig(n_videos=2, seconds=1.0, use_espeak=False)
    folder = generator.make_demo(tmp_path, cfg).parent
    first = _files(folder)
    stamp = (folder / "demo000.mp4").stat().st_mtime_ns
    (folder / "demo001.mp4").unlink()  # as if killed before this video was renamed into place
    generator.make_demo(tmp_path, cfg)
    assert (folder / "demo000.mp4").stat().st_mtime_ns == stamp  # skipped
    assert _files(folder) == first  # redone identically
    assert not (folder / ".tmp").exists()
    more = generator.make_demo(
        tmp_path, variants.DemoConfig(n_videos=3, seconds=1.0, use_espeak=False)
    )
    assert len(read_manifest(more)) == 3 and _files(folder)["demo000.mp4"] == first["demo000.mp4"]
    with pytest.raises(PrepError, match="different|delete"):
        generator.make_demo(
            tmp_path, variants.DemoConfig(n_videos=2, seconds=2.0, use_espeak=False)
        )
    # a folder made by an older fd2talk (other pictures, same settings) is refused too
    import json

    record = json.loads((folder / generator.CONFIG_JSON).read_text())
    del record["version"]
    (folder / generator.CONFIG_JSON).write_text(json.dumps(record))
    with pytest.raises(PrepError, match="older fd2talk.*delete"):
        generator.make_demo(tmp_path, cfg)


def test_mixed_formats(tmp_path):
    cfg = variants.DemoConfig(n_videos=5, seconds=1.0, use_espeak=False)
    for index, fps, sr, channels in ((3, 30, 44100, 2), (4, 24, 16000, 1)):
        video = generator.make_video(tmp_path, cfg, index)
        info = media.probe(video)
        assert (info.fps, info.sample_rate, info.channels) == (fps, sr, channels)
        assert media.count_frames(video) == fps
        # the ground truth is at 25 fps whatever the source frame rate
        assert np.load(tmp_path / f"{video.stem}.opening.npy").shape == (25,)
    assert variants.variant(cfg, 0).fps == 25
    assert {variants.variant(cfg, i).voice for i in range(5)} == set(speech.VOICES[:5])


def test_opening_is_frame_accurate():
    sr, fps = 16000, 25
    audio = np.zeros(sr * 2, np.float32)  # 50 frames; a loud burst during frames 20..29
    t = np.arange(20 * 640, 30 * 640) / sr
    audio[20 * 640 : 30 * 640] = 0.3 * np.sin(2 * np.pi * 200 * t)
    audio += np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32) * 1e-4
    opening = face_motion.mouth_opening(audio, sr, face_motion.frame_times(50, fps))
    assert opening[20:30].min() > 0.9
    assert opening[:19].max() < 0.05 and opening[31:].max() < 0.05
    assert 0.2 < opening[19] < 0.9 and 0.2 < opening[30] < 0.9  # the window spans 2 frames


@pytest.mark.parametrize("index", [0, 2], ids=["astronaut", "hopper"])
def test_mouth_warp_opens_only_the_lower_face(index):
    v = variants.variant(variants.DemoConfig(), index)  # not mirrored: the face's own coordinates
    assert v.face is portraits.FACES[index // 2] and not v.flip
    image = variants.portrait(v)
    warp = face_motion.MouthWarp(image, v.face, v.flip)
    assert np.array_equal(warp.render(0.0), image)
    opened = warp.render(1.0)
    changed = np.argwhere(np.any(opened != image, axis=-1))  # (N, 2) rows, cols
    assert changed[:, 0].min() > v.face.eyes[0][1]  # nothing above the eyes moves
    x, y = (int(round(c)) for c in v.face.mouth_line[5])
    d = max(1, round(v.face.iod / portraits.ASTRONAUT.iod))  # pixels per astronaut pixel
    below = (slice(y + 4 * d, y + 10 * d), slice(x - 3 * d, x + 3 * d))
    assert opened[below].mean() < 0.5 * image[below].mean()


# The default demo's split by video before splits by speaker existed (split.assign_splits over
# the video names): the learning tests on `demo_work` depend on it, so the manifest pins it.
DEMO_SPLITS = {
    "train": ["demo000", "demo001", "demo002", "demo003", "demo005", "demo006", "demo007"],
    "val": ["demo008"],
    "test": ["demo004", "demo009"],
}


def test_the_manifest_pins_the_demo_split():
    """Two people cannot fill three splits by speaker: the manifest pins each video's split,
    the old by-video one, and the shard stage's auto unit falls back to video for it."""
    from fd2talk.pipeline.stages.split import plan_splits

    rows = generator.manifest_rows(variants.DemoConfig())
    assert [(r["key"], r["speaker_id"]) for r in rows] == [
        (f"demo{i:03d}", portraits.face_of(i).name) for i in range(10)
    ]
    plan = plan_splits(rows)
    assert plan.split_by == "video" and "pins speakers to several splits" in plan.reason
    assert {
        sp: sorted(v for v, s in plan.videos.items() if s == sp) for sp in DEMO_SPLITS
    } == DEMO_SPLITS
    assert {r["key"]: r["split"] for r in rows} == plan.videos


def test_demo_shards_keep_the_split(demo_work):
    """`fd2talk-prep run --demo` puts the demo's clips where the manifest pins them."""
    import json

    shards = demo_work / "shards"
    assert json.loads((shards / "splits.json").read_text()) == {
        v: sp for sp, vids in DEMO_SPLITS.items() for v in vids
    }
    header = json.loads((shards / "manifest.jsonl").read_text().splitlines()[0])
    assert header["split_by"] == "video"
    assert header["groups_per_split"] == {sp: len(v) for sp, v in DEMO_SPLITS.items()}


def test_two_people_independent_of_flip_and_split():
    """Both people appear mirrored and not, and in the train and the held-out splits of the
    default demo, so a model must read the reference to tell who it is drawing."""
    cfg = variants.DemoConfig()
    videos = [variants.variant(cfg, i) for i in range(cfg.n_videos)]
    assert {(v.face.name, v.flip) for v in videos} == {
        (f.name, flip) for f in portraits.FACES for flip in (False, True)
    }
    splits = {r["key"]: r["split"] for r in generator.manifest_rows(cfg)}
    for part in (("train",), ("val", "test")):
        assert {v.face.name for v in videos if splits[v.name] in part} == {"astronaut", "hopper"}
    # every framing stays inside the portrait: no mirrored border in the frames
    for v in videos:
        h, w = v.face.image().shape[:2]
        m = face_motion.head_matrix(v, 0.0, cfg.size, w)
        corners = np.array([[0, 0, 1], [cfg.size, 0, 1], [0, cfg.size, 1], [cfg.size] * 2 + [1]])
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        src = corners @ inv.T  # (4, 2) portrait pixels of the frame's corners
        assert (src[:, 0] > -0.02 * w).all() and (src[:, 0] < 1.02 * w).all(), v
        assert (src[:, 1] > -0.02 * h).all() and (src[:, 1] < 1.02 * h).all(), v


def test_hopper_mouth_follows_the_speech(tmp_path, face_model):
    cfg = variants.DemoConfig(n_videos=2, seconds=4.0, seed=3, use_espeak=False)
    video = generator.make_video(tmp_path, cfg, 1)  # Grace Hopper, mirrored
    assert variants.variant(cfg, 1).face is portraits.HOPPER
    jaw, gap, opening = tracks.jaw_open_track(video, face_model)
    assert not np.isnan(jaw).any()
    assert np.corrcoef(jaw, opening)[0, 1] >= MIN_R
    assert np.percentile(jaw, 95) - np.percentile(jaw, 5) >= MIN_JAW_RANGE


def test_synthetic_speech_is_voiced_with_pauses():
    sr = 16000
    x = speech.normalise(speech.synthetic_speech(sr * 3, sr, np.random.default_rng(0)))  # (48000,)
    assert x.dtype == np.float32 and np.abs(x).max() <= 0.95
    loud = np.abs(x) >= np.median(np.abs(x))
    assert abs(np.sqrt(np.mean(x[loud] ** 2)) - speech.SPEECH_RMS) < 1e-3
    again = speech.normalise(speech.synthetic_speech(sr * 3, sr, np.random.default_rng(0)))
    assert np.array_equal(x, again)  # deterministic for a generator state
    frames = x[: len(x) // 640 * 640].reshape(-1, 640)
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    assert (level < level.max() - 30).sum() >= 5  # pauses
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    assert spectrum[(freqs > 80) & (freqs < 1000)].sum() > spectrum[freqs > 4000].sum()


@needs_espeak
def test_espeak_speech_fills_the_length():
    sr, n = 16000, 16000 * 4  # longer than one sentence: sentences and pauses are chained
    x = speech.espeak_speech(
        n,
        sr,
        np.random.default_rng(0),
        voice=speech.VOICES[0],
        speed=170,
        pitch=50,
        first_sentence=len(speech.SENTENCES) - 1,
    )  # wraps around
    assert x.shape == (n,) and x.dtype == np.float32
    frames = x.reshape(-1, 640)
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    assert (level < -80).sum() >= 3 and (level > level.max() - 20).sum() >= 20  # pauses, speech
    assert speech.speech_source(True) == "espeak-ng"
    assert speech.speech_source(False) == "synthetic"


def test_cli_demo_then_clip(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["demo", str(tmp_path), "--videos", "2", "--seconds", "1.5", "--seed", "1", "--no-espeak"],
    )
    assert result.exit_code == 0, result.output
    manifest = tmp_path / generator.DEMO_DIR / generator.MANIFEST
    assert str(manifest) in result.output and "fd2talk-prep clip" in result.output
    rows = read_manifest(manifest)
    assert [r.video_id for r in rows] == ["demo000", "demo001"]
    assert [r.speaker_id for r in rows] == ["astronaut", "hopper"]
    assert [r.split for r in rows] == [
        r["split"] for r in generator.manifest_rows(variants.DemoConfig(n_videos=2))
    ]
    result = runner.invoke(app, ["clip", str(tmp_path), "-m", str(manifest), "-q"])
    assert result.exit_code == 0, result.output
    for key in ("demo000_f000", "demo001_f000"):
        assert media.count_frames(tmp_path / "clips" / f"{key}.mp4") == 37  # 1.5 s at 25 fps


def test_ffmpeg_dying_early_is_a_prep_error_with_its_message(tmp_path):
    """libx264 refuses an odd frame size after ffmpeg starts reading: the pipe breaks mid-video;
    the error carries ffmpeg's own message, not a BrokenPipeError traceback."""
    cfg = variants.DemoConfig(size=511, seconds=2.0, use_espeak=False, mixed_formats=False)
    with pytest.raises(PrepError, match="width not divisible by 2"):
        generator.make_video(tmp_path, cfg, 0)
    assert not (tmp_path / "demo000.mp4").exists()


def test_a_stalled_encoder_is_killed_at_the_timeout(tmp_path, monkeypatch):
    """An encoder that never reads its input (a stand-in for a hung ffmpeg) is killed by the
    watchdog at ENCODE_TIMEOUT instead of blocking the pipe write forever."""
    import time

    stalled = tmp_path / "stalled-ffmpeg"
    stalled.write_text("#!/bin/sh\necho stalled >&2\nexec sleep 60\n")
    stalled.chmod(0o755)
    monkeypatch.setenv("FD2TALK_FFMPEG", str(stalled))
    monkeypatch.setattr(generator, "ENCODE_TIMEOUT", 1.0)
    cfg = variants.DemoConfig(size=256, seconds=2.0, use_espeak=False, mixed_formats=False)
    t0 = time.perf_counter()
    with pytest.raises(PrepError, match="ran past 1 s"):
        generator.make_video(tmp_path, cfg, 0)
    assert time.perf_counter() - t0 < 30
