"""MediaPipe landmarker wrapper: blendshape order, pose convention, canonical landmarks, 5 points."""

import cv2
import numpy as np
import pytest
import skimage.data

from fd2talk.pipeline.backends import canonical as C
from fd2talk.pipeline.backends import landmarker as L


def astronaut_crop(size: int = 256) -> np.ndarray:
    """A real face photo (scikit-image's astronaut), cropped around the head: (size, size, 3)."""
    return cv2.resize(
        skimage.data.astronaut()[0:250, 100:350], (size, size), interpolation=cv2.INTER_AREA
    )


def detect(image: np.ndarray) -> L.Frame:
    """One image through a fresh landmarker (no tracking state from other images)."""
    with L.Landmarker() as lmk:
        return lmk.detect(image, 0)


def rotate(image: np.ndarray, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """Rotate counter-clockwise (as displayed) by `degrees` about `centre`."""
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def face(face_model):
    image = astronaut_crop()
    return image, detect(image)


def test_blendshape_names_are_the_models_order(face_model):
    with L.Landmarker(face_model) as lmk:
        result = lmk.detect_raw(astronaut_crop(), 0)
    names = [c.category_name for c in result.face_blendshapes[0]]
    assert tuple(names) == L.BLENDSHAPE_NAMES
    assert [c.index for c in result.face_blendshapes[0]] == list(range(L.N_BLENDSHAPES))
    assert L.BLENDSHAPE_NAMES[L.JAW_OPEN] == "jawOpen" and L.JAW_OPEN == 25


def test_face_frame_and_empty_frame(face):
    image, frame = face
    assert frame.found
    assert frame.landmarks.shape == (L.N_LANDMARKS, 3) and frame.landmarks.dtype == np.float32
    xy = frame.landmarks[:, :2]
    assert xy.min() > 0 and xy.max() < image.shape[0]  # the whole face is inside the crop
    assert frame.blendshapes.shape == (52,) and 0 <= frame.blendshapes.min()
    assert frame.blendshapes.max() <= 1
    assert np.linalg.det(frame.matrix[:3, :3]) == pytest.approx(1.0, abs=1e-3)  # rigid
    assert frame.matrix[2, 3] < 0  # the face is in front of the camera (looking down -z)

    grey = np.full_like(image, 128)
    empty = detect(grey)
    assert not empty.found
    assert not empty.landmarks.any() and not empty.blendshapes.any() and not empty.matrix.any()


def test_track_stacks_frames_with_video_timestamps(face):
    image, _ = face
    frames = [image, image, np.full_like(image, 90), image]
    with L.Landmarker() as lmk:
        track = lmk.track(frames)
    assert L.timestamp_ms(3) == 120
    assert track.found.tolist() == [True, True, False, True]
    assert track.landmarks.shape == (4, 478, 3) and track.matrix.shape == (4, 4, 4)
    assert not track.landmarks[2].any()
    # the same image gives (nearly) the same landmarks, tracked or detected afresh
    assert np.abs(track.landmarks[3, :, :2] - track.landmarks[0, :, :2]).max() < 2.0
    assert lmk._landmarker is None  # closed by the context manager


def test_pose_angles_round_trip():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-1.2, 1.2, size=(50, 3))
    m = np.zeros((50, 4, 4))
    m[:, :3, :3] = L.rotation_from_angles(angles) * 1.3  # a scale is divided out
    m[:, :3, 3] = rng.normal(size=(50, 3))
    m[:, 3, 3] = 1
    pose = L.pose_from_matrix(m)
    assert pose.dtype == np.float32 and pose.shape == (50, 6)
    np.testing.assert_allclose(pose[:, :3], angles, atol=1e-5)
    np.testing.assert_allclose(pose[:, 3:], m[:, :3, 3], atol=1e-5)
    # R = Rz(roll) @ Ry(yaw) @ Rx(pitch)
    pitch, yaw, roll = angles[0]
    rx = L.rotation_from_angles(np.array([pitch, 0, 0]))
    ry = L.rotation_from_angles(np.array([0, yaw, 0]))
    rz = L.rotation_from_angles(np.array([0, 0, roll]))
    np.testing.assert_allclose(rz @ ry @ rx, L.rotation_from_angles(angles[0]), atol=1e-12)
    assert not L.pose_from_matrix(np.zeros((4, 4))).any()  # no face -> zero pose


def test_pose_follows_in_plane_rotation_and_mirroring(face):
    image, frame = face
    pose = L.pose_from_matrix(frame.matrix)
    centre = tuple(float(v) for v in frame.landmarks[4, :2])  # the nose
    for degrees in (-12.0, 12.0):
        turned = L.pose_from_matrix(detect(rotate(image, degrees, centre)).matrix)
        # counter-clockwise in the image = positive roll (z points at the camera)
        assert turned[2] - pose[2] == pytest.approx(np.radians(degrees), abs=0.05)
        assert abs(turned[1] - pose[1]) < 0.05
    mirrored = L.pose_from_matrix(detect(np.ascontiguousarray(image[:, ::-1])).matrix)
    assert mirrored[1] == pytest.approx(-pose[1], abs=0.05)  # yaw flips
    assert mirrored[2] == pytest.approx(-pose[2], abs=0.05)  # roll flips
    assert mirrored[0] == pytest.approx(pose[0], abs=0.05)  # pitch stays


def test_canonical_face_metadata(face_model):
    cf = C.canonical_face()
    assert cf.mesh.shape == (468, 3)
    assert len(cf.basis_ids) == len(cf.basis_weights) == 33
    assert cf.basis_ids.max() < 468 and (cf.basis_weights > 0).all()
    assert abs(cf.mesh[4, 0]) < 0.05  # the nose tip sits on the symmetry plane
    assert 12 < np.ptp(cf.mesh[:, 1]) < 25  # face height in cm
    assert cf.mesh[4, 2] > cf.mesh[:, 2].mean()  # the nose points at the camera (+z)


def test_canonical_landmarks_remove_similarity(face):
    image, frame = face
    lm = frame.landmarks.astype(np.float64)
    canon = C.canonical_landmarks(lm)
    assert canon.shape == (478, 3) and canon.dtype == np.float32
    mesh = C.canonical_face().mesh
    assert np.linalg.norm(canon[:468] - mesh, axis=1).mean() < 1.0  # cm, a real face
    rng = np.random.default_rng(1)
    for _ in range(3):
        q = L.rotation_from_angles(rng.uniform(-0.6, 0.6, 3))
        moved = 1.7 * lm @ q.T + rng.normal(scale=50, size=3)
        np.testing.assert_allclose(C.canonical_landmarks(moved), canon, atol=1e-3)
    batch = C.canonical_landmarks(np.stack([lm, np.zeros_like(lm)]))
    np.testing.assert_allclose(batch[0], canon, atol=1e-5)
    assert not batch[1].any()  # no face stays zero
    # the same face turned in the image plane: the canonical shape barely moves
    centre = tuple(float(v) for v in frame.landmarks[4, :2])
    turned = C.canonical_landmarks(detect(rotate(image, 15.0, centre)).landmarks)
    assert np.linalg.norm(turned - canon, axis=1).mean() < 0.2  # cm


def test_five_points_on_a_generated_face(face):
    image, frame = face
    p5 = L.five_points(frame.landmarks)
    assert p5.shape == (5, 2)
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = p5
    assert lx < nx < rx and mlx < nx < mrx  # image-left before image-right
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose above the mouth
    # each eye centre lies in one of the eye boxes OpenCV's Haar cascade finds
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    boxes = cascade.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 1.1, 5)
    assert len(boxes) >= 2
    for ex, ey in p5[:2]:
        assert any(x <= ex <= x + w and y <= ey <= y + h for x, y, w, h in boxes)
    np.testing.assert_allclose(L.five_points(frame.landmarks[None])[0], p5)


def test_lip_gap(face):
    _, frame = face
    gap = L.lip_gap(frame.landmarks)
    assert 0 < gap < 20  # pixels: the smiling astronaut shows her teeth
