"""Video-only sources (manifest `audio: no`) for stage 2, as the paper adds VFHQ: clipped,
cropped and given coefficients like any source, no audio stage, sharded with "audio": false;
the lip expert's and the motion transformers' streams pass them by, the autoencoder's and the
frame UNet's use them (with their true motion where stage-1 predictions need speech)."""

import json
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from fd2talk.model.data import loader as data
from fd2talk.model.data.frame_items import AE_FIELDS
from fd2talk.model.data.normalize import Stats
from fd2talk.model.generation.frames import condition
from fd2talk.model.training.motion_cache import motion_condition
from fd2talk.pipeline.runner.runner import run_stage
from fd2talk.pipeline.stages.chain import ChainConfig, run_all
from fd2talk.pipeline.stages.clip import ClipConfig, ClipStage


@pytest.mark.slow  # over 10 s: out of the fast subset
def test_video_only_sources_reach_stage_2_and_not_stage_1(shared_media, tmp_path):
    src = shared_media / "talk_10_512.mp4"
    talk, mute, talk_as_mute = (tmp_path / n for n in ("talk.mp4", "mute.mp4", "muted.mp4"))
    for out, extra in ((talk, []), (mute, ["-an"]), (talk_as_mute, [])):
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(src),
                "-t",
                "2",
                *extra,
                "-c:v",
                "libx264",
                *(["-c:a", "aac"] if not extra else []),
                str(out),
            ],
            check=True,
            timeout=120,
        )
    (tmp_path / "m.csv").write_text(
        "key,path,audio,split\n"
        f"talk,{talk},,train\n"
        f"mute,{mute},no,train\n"  # no audio stream at all
        f"muted,{talk_as_mute},no,train\n"  # has sound, marked unusable: ignored
        f"nosound,{mute},,train\n"
    )  # no audio stream and not marked: skipped, as before
    work = tmp_path / "work"
    summaries = {
        s.stage: s
        for s in run_all(
            work, ChainConfig(clip=ClipConfig(str(tmp_path / "m.csv"))), progress=False
        )
    }
    assert dict(summaries["clip"].skipped) == {"no_audio_stream": 1}
    # marking the skipped silent source `audio: no` afterwards redoes it (a skip is a verdict
    # on the row it saw); the rest is not redone
    marked = tmp_path / "m2.csv"
    marked.write_text(
        (tmp_path / "m.csv")
        .read_text()
        .replace(f"nosound,{mute},,train", f"nosound,{mute},no,train")
    )
    again = run_stage(ClipStage(ClipConfig(str(marked))), work, progress=False)
    assert (again.done, again.already, sum(again.skipped.values())) == (1, 3, 0)
    assert summaries["coeffs"].done == 3
    assert summaries["audio"].total == 1  # the video-only crops are not the audio stage's
    assert not list((work / "crops").glob("mute*.wav"))
    probe = json.loads(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_streams",
                "-of",
                "json",
                str(next((work / "crops").glob("muted*.mp4"))),
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert [s["codec_type"] for s in probe["streams"]] == ["video"]

    shards = work / "shards"
    names = {}
    for tar in sorted(shards.glob("train-*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, _, ext = m.name.partition(".")
                names.setdefault(key, set()).add(ext)
    by_key = {k.split("_f")[0]: v for k, v in names.items()}
    assert "audio.npy" in by_key["talk"]
    assert "audio.npy" not in by_key["mute"] and "audio.npy" not in by_key["muted"]

    stage1 = [c["key"] for c in data.iter_clips(shards, "train", data.MOTION_FIELDS)]
    stage2 = [c["key"] for c in data.iter_clips(shards, "train", AE_FIELDS)]
    assert [k.split("_f")[0] for k in stage1] == ["talk"]
    assert sorted(k.split("_f")[0] for k in stage2) == ["mute", "muted", "talk"]
    assert all(
        c["meta"]["audio"] is False
        for c in data.iter_clips(shards, "train", AE_FIELDS)
        if not c["key"].startswith("talk")
    )
    info = data.dataset_info(shards, "train", ("exp", "pose", "valid"))
    assert info.audio_features == "logmel" and info.audio_dim == 80

    # the stage-1 stream never yields a video-only window (and reads only shards with speech)
    stream = data.StreamConfig(batch_size=2, epoch_batches=6)
    for batch in data.train_batches(
        data.split_shards(shards, "train"), stream, data.MOTION_FIELDS, 0, 0
    ):
        assert all(k.startswith("talk") for k in batch["key"]), batch["key"]
    # ... while the frame UNet's stream yields all three, each saying whether it has speech
    from fd2talk.model.data.frame_items import FrameItems

    maker = FrameItems(2)
    seen = {}
    for batch in data.train_batches(
        data.split_shards(shards, "train"),
        data.StreamConfig(batch_size=2, epoch_batches=12),
        maker.fields(),
        0,
        0,
        make_items=maker,
    ):
        for k, sp in zip(batch["key"], batch["speech"].tolist(), strict=True):
            seen[k.split("_f")[0]] = sp
    assert seen == {"talk": True, "mute": False, "muted": False}

    # frames trained on stage-1 predictions: a video-only clip conditions on its truth, a clip
    # with speech on its prediction
    clips = {
        c["key"].split("_f")[0]: c
        for c in data.iter_clips(shards, "train", ("exp", "pose", "valid"))
    }
    stats = Stats.compute(iter(clips.values()), ("exp", "pose"))
    talk, mute = clips["talk"], clips["mute"]
    d = talk["exp"].shape[1]
    cache = {talk["key"]: np.arange(100 * (d + 6), dtype=np.float32).reshape(100, d + 6)}
    batch = {
        "key": [talk["key"], mute["key"]],
        "index": torch.tensor([3, 4]),
        "speech": torch.tensor([True, False]),
        "exp": torch.from_numpy(np.stack([talk["exp"][3], mute["exp"][4]])),
        "pose": torch.from_numpy(np.stack([talk["pose"][3], mute["pose"][4]])),
    }
    before = batch["exp"].clone()
    mixed = motion_condition(batch, stats, cache)
    truth = motion_condition(batch, stats, None)
    predicted = condition(
        stats,
        torch.from_numpy(cache[talk["key"]][3:4, :d]),
        torch.from_numpy(cache[talk["key"]][3:4, d:]),
        None,
    )
    assert torch.equal(mixed[1], truth[1]) and torch.allclose(mixed[0], predicted[0])
    assert torch.equal(batch["exp"], before)  # the batch itself is not written
