"""Every file fd2talk writes follows the umask, as `open` does: safetensors' `save_file` makes
its files 0600 whatever the umask, so a model folder exported by root into an image, or onto a
shared disk, would be unreadable by the user a container runs as."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from fd2talk.core.atomic import follow_umask, write_json


@pytest.fixture
def umask():
    def set_mask(mask: int) -> int:
        os.umask(mask)
        return mask

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_follow_umask_undoes_safetensors_0600(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    assert _mode(path) == 0o600  # what safetensors does on its own (the bug being fixed)
    follow_umask(path)
    assert _mode(path) == 0o666 & ~mask
    write_json(tmp_path / "config.json", {"a": 1})  # the rest of fd2talk's writes agree
    assert _mode(tmp_path / "config.json") == 0o666 & ~mask


def test_the_autoencoder_and_model_folder_writers_follow_the_umask(tmp_path, umask):
    from fd2talk.model.configs import AUTOENCODER_PRESETS
    from fd2talk.model.nets.autoencoder import RefAutoencoder
    from fd2talk.model.store import folder

    umask(0o022)
    torch.manual_seed(0)
    ae = RefAutoencoder(AUTOENCODER_PRESETS["tiny"])
    ae.save(tmp_path / "ae")
    modes = {p.name: _mode(p) for p in (tmp_path / "ae").iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
    out = folder.write_folder(
        {"autoencoder": folder.autoencoder_part(tmp_path / "ae")}, tmp_path / "model"
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    assert {p.relative_to(out).as_posix(): _mode(p) for p in files} == {
        p.relative_to(out).as_posix(): 0o644 for p in files
    }
