"""Head motion from elsewhere: a pose track of any length fitted to the video, and scaled
about its mean (a video's own pose, which needs the trained models, is in test_pipeline)."""

import numpy as np

from fd2talk.model.generation.pipeline import scale_motion
from fd2talk.model.generation.pose import fit_length


def test_pose_tracks_fit_any_length_and_scale_about_their_mean():
    track = np.arange(5, dtype=np.float32)[:, None].repeat(6, 1)
    assert fit_length(track, 3)[:, 0].tolist() == [0, 1, 2]
    assert fit_length(track, 12)[:, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]
    assert fit_length(track[:1], 4).shape == (4, 6)
    m = {"exp": np.ones((5, 3), np.float32), "pose": track}
    s = scale_motion(m, 0.0, 2.0)
    assert np.allclose(s["pose"], 2.0) and np.allclose(s["exp"], 2.0)
    assert np.allclose(scale_motion(m, 1.0, 1.0)["pose"], track)
