"""face-alignment's 2D-FAN: 68 landmarks per face, the paper's landmark backend (DESIGN.md 6).

    with FanLandmarker(fan_weights, s3fd_weights) as fan:
        lm = fan.landmarks(frame)  # (H, W, 3) uint8 RGB -> (68, 2) float32 pixels, or None

The face-alignment library does the work: its S3FD finds the faces (`face_detector_kwargs=
{'path_to_detector': ...}`), its FAN-4 places the 68 iBUG 300-W points in each, with its
flip test. Nothing is downloaded:

- S3FD's state dict is passed as a path (`--s3fd-weights` / $FD2TALK_S3FD_WEIGHTS).
- face-alignment reads FAN's file only from torch.hub's cache directory
  (`<hub dir>/checkpoints/2DFAN4-11f355bf06.pth.tar`) and downloads it when absent. The file
  given (`--fan-weights` / $FD2TALK_FAN_WEIGHTS) is checked first, then linked under that name
  in a private folder that torch.hub's directory points at while the model loads (then
  restored), so the library finds it and never reaches its download.

On CPU the model runs eagerly (`compile=False`); on CUDA face-alignment compiles it.
The coeffs stage's `--landmarks fan` aligns Deep3D's input with `five_points` of these
(the Deep3D recipe: eye centres from the corners, nose tip, mouth corners).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fd2talk.core.device import resolve_device
from fd2talk.pipeline.backends import landmarker
from fd2talk.pipeline.backends.detect import (
    S3FD_FILE,
    S3FD_URL,
    ClosedOnExit,
    check_state_dict,
    s3fd_weights_path,
)
from fd2talk.pipeline.backends.weights import local_weight

N_POINTS = 68
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"  # the name face-alignment 1.5 looks for
FAN_ENV = "FD2TALK_FAN_WEIGHTS"
FAN_URL = f"https://www.adrianbulat.com/downloads/python-fan/{FAN_FILE}"
# Deep3D's 5 points from the 68 (its util/load_mats.py, lm_idx): the eye centres (the mean of
# each eye's corners), the nose tip, the mouth corners; image-left eye first, as
# landmarker.FIVE_POINT_IDS orders MediaPipe's.
FIVE_POINT_IDS: tuple[tuple[int, ...], ...] = ((36, 39), (42, 45), (30,), (48,), (54,))

_HUB_LOCK = threading.Lock()  # torch.hub's directory is process-wide


def fan_weights_path(flag: str | Path | None = None) -> Path:
    """Resolve FAN's weights: `flag`, else $FD2TALK_FAN_WEIGHTS; a missing file is a PrepError."""
    return local_weight(
        flag,
        flag_name="--fan-weights PATH",
        env=FAN_ENV,
        name=f"2D-FAN weights {FAN_FILE}",
        hint=f"download {FAN_FILE} from {FAN_URL}, face-alignment's published 2D-FAN-4 "
        "(it fetches it on first use), and give its path",
        alternative="--landmarks mediapipe",
    )


def check_weights(
    fan_weights: str | Path | None = None, s3fd_weights: str | Path | None = None
) -> tuple[Path, Path]:
    """Both files resolved (PrepError naming a missing one); loads nothing."""
    return fan_weights_path(fan_weights), s3fd_weights_path(s3fd_weights)


@contextlib.contextmanager
def _hub_dir_holding(fan: Path) -> Iterator[None]:
    """torch.hub's directory pointed at a private folder whose checkpoints/ holds `fan` under
    face-alignment's file name, for the duration; the previous directory is restored."""
    import torch.hub

    with _HUB_LOCK, tempfile.TemporaryDirectory(prefix="fd2talk-fan-") as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        (Path(tmp) / "checkpoints" / FAN_FILE).symlink_to(fan.resolve())
        # torch.hub keeps the directory set_dir gave in `_hub_dir` (None: follow $TORCH_HOME);
        # restoring that exactly leaves a process that never set one following $TORCH_HOME
        previous = getattr(torch.hub, "_hub_dir", None)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, >=2) FAN landmarks -> (..., 5, 2) Deep3D alignment points (same pixels)."""
    return landmarker.five_points(landmarks, FIVE_POINT_IDS)


class FanLandmarker(ClosedOnExit):
    """face-alignment's `FaceAlignment` (2D, FAN-4, S3FD) from local files, on CUDA when present."""

    def __init__(
        self,
        fan_weights: str | Path | None = None,
        s3fd_weights: str | Path | None = None,
        device: str = "auto",
    ):
        fan, s3fd = check_weights(fan_weights, s3fd_weights)
        self.device = resolve_device(device)
        import face_alignment
        from face_alignment.detection.sfd.net_s3fd import s3fd as s3fd_net
        from face_alignment.models import FAN

        check_state_dict(s3fd, s3fd_net(), S3FD_FILE, S3FD_URL)  # a bad file: a PrepError
        check_state_dict(fan, FAN(4), FAN_FILE, FAN_URL)
        with _hub_dir_holding(fan), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its compile notice
            self._fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D,
                device=self.device,
                face_detector="sfd",
                face_detector_kwargs={"path_to_detector": str(s3fd)},
                compile=self.device.startswith("cuda"),
            )

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """The 68 points (float32 pixels) of the largest face S3FD finds in the RGB `frame`."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected."
            points, _, boxes = self._fa.get_landmarks_from_image(
                np.ascontiguousarray(frame), return_bboxes=True
            )
        if not points:
            return None
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        return np.asarray(points[int(np.argmax(areas))], np.float32)[:, :2]

    def close(self) -> None:
        self._fa = None
