"""`fd2talk-train lipsync` on the demo shards: the expert learns sync, checkpoints load as the
frozen critic, and bad inputs are clear errors."""

import json

import numpy as np
import pytest
import torch

from fd2talk.core.errors import UserError
from fd2talk.model.data.loader import dataset_info
from fd2talk.model.training.lipsync import LipsyncTrainConfig, train_lipsync
from fd2talk.model.training.sync_critic import load_sync_critic


def test_expert_tells_in_sync_from_shifted_audio_on_held_out_clips(lip_expert):
    _, metrics = lip_expert
    print(
        f"lip expert on the demo val split: in-sync {metrics['acc_in_sync']:.3f}, "
        f"off-sync {metrics['acc_off_sync']:.3f} over {metrics['pairs']} pairs"
    )
    balanced = (metrics["acc_in_sync"] + metrics["acc_off_sync"]) / 2
    assert metrics["pairs"] >= 100
    # chance is 0.5; bench/learning_spread.py: 0.698-0.740 over 3 training seeds
    assert balanced > 0.62, metrics


def test_checkpoint_becomes_a_frozen_critic_with_gradients_into_beta(lip_expert, demo_work):
    path, _ = lip_expert
    info = dataset_info(demo_work / "shards")
    critic = load_sync_critic(path, info, "cpu")
    assert not any(p.requires_grad for p in critic.parameters())
    critic.train()
    assert not critic.training  # stays in eval mode inside a training loop
    beta = torch.zeros(2, 25, info.exp_dim, requires_grad=True)
    loss = critic(
        beta,
        torch.zeros(2, 1434),
        torch.randn(2, 25, info.audio_dim),
        torch.ones(2, 25, dtype=torch.bool),
    )
    loss.backward()
    assert torch.isfinite(loss) and beta.grad.abs().sum() > 0
    # no valid window: zero loss, still differentiable
    none = critic(
        beta,
        torch.zeros(2, 1434),
        torch.randn(2, 25, info.audio_dim),
        torch.zeros(2, 25, dtype=torch.bool),
    )
    assert float(none.detach()) == 0.0


def test_critic_refuses_checkpoints_that_do_not_fit(lip_expert, demo_work, tmp_path):
    path, _ = lip_expert
    info = dataset_info(demo_work / "shards")
    with pytest.raises(UserError, match="needs a pre-trained lip expert.*fd2talk-train lipsync"):
        load_sync_critic(None, info, "cpu")
    with pytest.raises(UserError, match="not found.*--lambda-sync 0"):
        load_sync_critic(tmp_path / "nope.pt", info, "cpu")
    other = info.__class__(coeffs="deep3d", exp_dim=64, audio_features="logmel", audio_dim=80)
    with pytest.raises(UserError, match="coeffs='mediapipe'.*coeffs='deep3d'"):
        load_sync_critic(path, other, "cpu")


def test_deep3d_shards_need_the_bfm_file(demo_work, tmp_path, monkeypatch):
    from helpers import npy, rewrite_shards

    def as_deep3d(sample):
        meta = json.loads(sample["json"])
        meta.update(coeffs="deep3d", exp_dim=64)
        sample["json"] = json.dumps(meta).encode()
        exp = np.load(__import__("io").BytesIO(sample["exp.npy"]))
        sample["exp.npy"] = npy(np.zeros((len(exp), 64), np.float32))

    shards = rewrite_shards(demo_work / "shards", tmp_path / "d3d", as_deep3d)
    monkeypatch.delenv("FD2TALK_BFM_DIR", raising=False)
    cfg = LipsyncTrainConfig(shards=str(shards), out=str(tmp_path / "run"), steps=1, device="cpu")
    with pytest.raises(UserError, match="BFM_model_front.mat.*FD2TALK_BFM_DIR"):
        train_lipsync(cfg, progress=False)
