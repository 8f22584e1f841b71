"""Paste-back: generated face crops blended into the whole portrait."""

import numpy as np

from fd2talk.model.generation.options import Reference
from fd2talk.model.generation.paste import Paste


def test_paste_back_blends_the_face_into_the_whole_portrait():
    img = np.full((300, 200, 3), 50, np.uint8)
    ref = Reference(img, np.zeros((256, 256, 3), np.uint8), (40, 80, 160, 200), 1)
    paste = Paste(ref)
    out = paste(np.full((2, 64, 64, 3), 250, np.uint8))
    assert out.shape == (2, 300, 200, 3)
    assert (out[:, 140, 100] == 250).all()  # the face's centre: the generated pixels
    assert (out[:, 10, 10] == 50).all() and (out[:, 80, 40] == 50).all()  # outside, its edge
    assert 50 < out[0, 140, 50, 0] < 250  # the feathered band blends
