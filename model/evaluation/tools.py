"""The networks and models scoring needs, loaded once per process: the landmarker's face model
and the third-party metric networks of `nets.py` (SyncNet for LSE, Hopenet for the paper's
diversity and beat align, Inception for FID), each from a local weights file or, when its
file is not here, recorded as unavailable with the file it needs (the other metrics still
run). The weights' paths and sha256 go into eval.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Tools:
    """What scoring needs, loaded once: the landmarker's face model and SyncNet (or why it is
    unavailable)."""

    face_model: str | None = None
    device: str = "cpu"
    syncnet: object | None = None
    hopenet: object | None = None
    inception: object | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    weights: dict[str, dict] = field(default_factory=dict)  # name -> path, sha256 (the JSON's)
    paths: dict[str, str | None] = field(default_factory=dict)  # as given (for workers)

    @classmethod
    def load(
        cls,
        syncnet: str | None = None,
        face_model: str | None = None,
        device: str = "cpu",
        hopenet: str | None = None,
        inception: str | None = None,
    ) -> Tools:
        from fd2talk.model.evaluation import nets as N
        from fd2talk.pipeline.backends.weights import sha256 as file_sha256

        tools = cls(face_model=face_model, device=device)
        tools.paths = {"syncnet": syncnet, "hopenet": hopenet, "inception": inception}
        envs = {"syncnet": N.SYNCNET_ENV, "hopenet": N.HOPENET_ENV, "inception": N.INCEPTION_ENV}
        for name, loader in (
            ("syncnet", N.load_syncnet),
            ("hopenet", N.load_hopenet),
            ("inception", N.load_inception),
        ):
            try:
                setattr(tools, name, loader(tools.paths[name], device))
            except N.Unavailable as e:
                tools.unavailable[name] = str(e)
                continue
            path = Path(tools.paths[name] or os.environ[envs[name]])
            tools.weights[name] = {"path": str(path.resolve()), "sha256": file_sha256(path)}
        return tools
