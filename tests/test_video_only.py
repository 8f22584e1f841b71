"""Video-only sources (manifest `audio: no`) for stage 2, as the paper adds VFHQ: clipped,
cropped and given coefficients like any source, no audio stage, sharded with "audio": false;
the lip expert's and the motion transformers' streams pass them by, the autoencoder's and the
frame UNet's use them (with their true motion where stage-1 predictions need speech)."""

import json
import subprocess
import tarfile

import numpy as np
import torch

from fd2talk.model import data
from fd2talk.model.frame_data import AE_FIELDS
from fd2talk.model.normalize import Stats
from fd2talk.model.train_frames import motion_condition
from fd2talk.pipeline.clip import ClipConfig
from fd2talk.pipeline.run import RunConfig, run_all


def test_video_only_sources_reach_stage_2_and_not_stage_1(shared_media, tmp_path):
    src = shared_media / "talk_10_512.mp4"
    talk, mute, talk_as_mute = (tmp_path / n for n in ("talk.mp4", "mute.mp4", "muted.mp4"))
    for out, extra in ((talk, []), (mute, ["-an"]), (talk_as_mute, [])):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", "2", *extra,
                        "-c:v", "libx264", *(["-c:a", "aac"] if not extra else []), str(out)],
                       check=True, timeout=120)
    (tmp_path / "m.csv").write_text(
        "key,path,audio,split\n"
        f"talk,{talk},,train\n"
        f"mute,{mute},no,train\n"  # no audio stream at all
        f"muted,{talk_as_mute},no,train\n"  # has sound, marked unusable: ignored
        f"nosound,{mute},,train\n")  # no audio stream and not marked: skipped, as before
    work = tmp_path / "work"
    summaries = {s.stage: s for s in run_all(work, RunConfig(
        clip=ClipConfig(str(tmp_path / "m.csv"))), progress=False)}
    assert dict(summaries["clip"].skipped) == {"no_audio_stream": 1}
    assert summaries["coeffs"].done == 3
    assert summaries["audio"].total == 1  # the video-only crops are not the audio stage's
    assert not list((work / "crops").glob("mute*.wav"))
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json",
         str(next((work / "crops").glob("muted*.mp4")))], capture_output=True, check=True,
        timeout=60).stdout)
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
    assert all(c["meta"]["audio"] is False for c in data.iter_clips(shards, "train", AE_FIELDS)
               if not c["key"].startswith("talk"))
    info = data.dataset_info(shards, "train", ("exp", "pose", "valid"))
    assert info.audio_features == "logmel" and info.audio_dim == 80

    # the stage-1 stream never yields a video-only window
    stream = data.StreamConfig(batch_size=2, epoch_batches=6)
    seen = set()
    for batch in data.train_batches(data.split_shards(shards, "train"), stream,
                                    data.MOTION_FIELDS, 0, 0):
        seen.add(tuple(batch["audio"].shape))
    assert seen and all(shape[-1] == 80 for shape in seen)

    # frames trained on stage-1 predictions: a video-only clip conditions on its truth
    clips = list(data.iter_clips(shards, "train", ("exp", "pose", "valid")))
    stats = Stats.compute(iter(clips), ("exp", "pose"))
    talk_key = next(c["key"] for c in clips if c["key"].startswith("talk"))
    mute_clip = next(c for c in clips if c["key"].startswith("mute_"))
    d = clips[0]["exp"].shape[1]
    cache = {talk_key: np.zeros((100, d + 6), np.float32)}
    batch = {"key": [talk_key, mute_clip["key"]], "index": torch.tensor([3, 4]),
             "exp": torch.from_numpy(np.stack([clips[0]["exp"][3], mute_clip["exp"][4]])),
             "pose": torch.from_numpy(np.stack([clips[0]["pose"][3], mute_clip["pose"][4]]))}
    truth = motion_condition(batch, stats, None)
    mixed = motion_condition(batch, stats, cache)
    assert torch.equal(mixed[1], truth[1]) and not torch.equal(mixed[0], truth[0])
