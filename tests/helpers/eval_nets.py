"""Stand-in SyncNet weights in syncnet_python's published layout, for the evaluation tests."""

from __future__ import annotations

import torch

from fd2talk.model.evaluation import nets as N


def syncnet_file(tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    net = N.SyncNet()
    for m in net.modules():  # non-trivial running statistics, as trained weights have
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "syncnet_v2.model"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()
