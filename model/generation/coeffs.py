"""Expression and pose read from frames in memory with the data pipeline's coefficient stage
(`fd2talk-prep coeffs`, DESIGN.md section 2): the backend the training shards were made with,
so what generation measures is in the units the models learnt (paper section 3.1: the 3DMM /
blendshape coefficients). Generation reads the portrait's crop and a driving video's crops
with it; the evaluation and the demo's check read generated videos back with it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fd2talk.core.errors import UserError


def read_coefficients(
    frames: Iterable[np.ndarray], backend: str, face_model: str | None = None
) -> dict[str, np.ndarray]:
    """The coefficient arrays (exp, pose, valid, lm, ...: the shards' per-frame fields) of
    (H, W, 3) uint8 RGB frames, one row per frame, with `backend` ("mediapipe" or "deep3d");
    a setting the stage refuses is a UserError."""
    from fd2talk.core.skip import PrepError
    from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage

    try:
        stage = CoeffsStage(CoeffsConfig(backend=backend, face_model=face_model))
    except PrepError as e:
        raise UserError(str(e)) from None
    try:
        return stage.coefficients(frames)
    finally:
        stage.close()
