"""The reference crop of any portrait: the face found and framed as training crops were (a
portrait without a face is a clear error)."""

import numpy as np
import pytest

from fd2talk.core.errors import UserError
from fd2talk.model.data import loader as data
from fd2talk.model.generation.reference import find_reference


def test_find_reference_finds_the_face_or_says_there_is_none(shared_media, face_model):
    import cv2

    image = cv2.cvtColor(cv2.imread(str(shared_media / "faces" / "000002.jpg")), cv2.COLOR_BGR2RGB)
    ref = find_reference(image, str(face_model))
    assert ref.crop.shape == (256, 256, 3) and ref.crop.dtype == np.uint8 and ref.faces == 1
    blank = np.full((300, 400, 3), 127, np.uint8)  # no face anywhere
    with pytest.raises(UserError, match="no face found in the portrait"):
        find_reference(blank, str(face_model))


def test_find_reference_on_the_demo_portrait(demo_work, face_model):
    clip = next(data.iter_clips(demo_work / "shards", "test", ("valid", "mp4")))
    frame = data.decode_frames(clip["mp4"])[0]  # already a 256 crop: the face fills it
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:356, 300:556] = frame
    crop = find_reference(canvas, str(face_model)).crop
    assert crop.shape == (256, 256, 3)
    assert crop.mean() > 0.5 * frame.mean()  # the crop is on the face, not the black canvas
