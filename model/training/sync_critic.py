"""L_sync for stage 1: the frozen lip expert applied to predicted expression (paper section 3.2).

`SyncCritic` holds the face model (eq. 1, mouth subset), the pre-trained `LipExpert` and the
audio normalisation it was trained with, all frozen. Given raw (denormalised) predicted
expression beta (N, F, D_exp), identity alpha (N, D_id) and raw audio features (N, F, D_a), it
builds mouth vertices, cuts every sliding window of the expert's length, and returns
L_sync = -log P_sync averaged over the windows whose frames are all valid. Gradients flow into
beta; the critic's own weights never change.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fd2talk.core.errors import UserError
from fd2talk.model.data.loader import DatasetInfo, check_same_kind
from fd2talk.model.data.normalize import Stats
from fd2talk.model.nets.face_model import FaceModel
from fd2talk.model.nets.lip_expert import LipExpert, LipExpertConfig, sync_loss, windows

LIPSYNC_HINT = (
    "train one with `fd2talk-train lipsync --shards SHARDS --out RUN`, then pass "
    "--lip-expert RUN (its run directory); or pass --lambda-sync 0 to train without L_sync"
)


class SyncCritic(nn.Module):
    def __init__(self, face: FaceModel, expert: LipExpert, stats: Stats):
        super().__init__()
        self.face, self.expert, self.stats = face, expert, stats
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SyncCritic:  # always frozen, always eval
        return super().train(False)

    def forward(
        self, beta: torch.Tensor, alpha: torch.Tensor, audio: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        w = self.expert.config.window
        mouth = self.face(beta, alpha[:, None])  # (N, F, M, 3)
        audio = self.stats.normalize("audio", audio)  # (N, F, D_a)
        mw = windows(mouth, w).flatten(0, 1)  # (N * (F - w + 1), w, M, 3)
        aw = windows(audio, w).flatten(0, 1)  # (N * (F - w + 1), w, D_a)
        ok = windows(valid, w).flatten(0, 1).all(-1)  # (N * (F - w + 1),)
        if not bool(ok.any()):
            return beta.sum() * 0.0
        return sync_loss(self.expert(mw[ok], aw[ok]))


def load_sync_critic(path: str | Path | None, info: DatasetInfo, device: str) -> SyncCritic:
    """Load `fd2talk-train lipsync`'s checkpoint and check it matches the motion shards."""
    if not path:
        raise UserError(f"--lambda-sync > 0 needs a pre-trained lip expert: {LIPSYNC_HINT}")
    from fd2talk.model.store import folder as pretrained

    if not Path(path).exists():
        raise UserError(f"lip expert {path} not found: {LIPSYNC_HINT}")
    part = pretrained.require(pretrained.load_parts([path]), "lip_expert", [path])
    check_same_kind(part.config["dataset"], info, f"the lip expert {path}")
    face = FaceModel.from_state({**part.config["face_model"], **part.sub("face")})
    expert = LipExpert(
        LipExpertConfig(**part.config["expert_config"]), face.n_points, info.audio_dim
    )
    expert.load_state_dict(part.sub("expert"))
    return SyncCritic(face, expert, Stats.from_state_dict(part.config["stats"])).to(device)
