"""Face tubes (FOMM crop algorithm) on hand-made box sequences; squaring/clipping geometry."""

import numpy as np
import pytest

from fd2talk.pipeline.stages.tubes import (
    IOU_WITH_INITIAL,
    TubeBuilder,
    crop_box,
    enlarge,
    iou,
    join,
    long_tubes,
    square_in_frame,
)


def _shift(box, dx=0.0, dy=0.0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _tubes(detections, iou_with_initial=IOU_WITH_INITIAL):
    """Tubes of `[(frame, [box, ...]), ...]` (frames increasing, gaps allowed), fed to a
    TubeBuilder one detected frame at a time as the crop stage's scan feeds it."""
    builder = TubeBuilder(iou_with_initial)
    for frame, boxes in detections:
        builder.update(frame, boxes)
    return builder.tubes()


def test_iou_and_join():
    a = (0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, (20, 20, 30, 30)) == 0.0
    assert iou(a, (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(a, (0, 0, 0, 10)) == 0.0  # empty box
    assert join(a, (5, -5, 12, 8)) == (0, -5, 12, 10)


def test_two_people_give_two_tubes():
    left, right = (10, 20, 60, 80), (200, 25, 250, 85)
    dets = [(f, [_shift(left, f * 0.5), _shift(right, -f * 0.5, f * 0.2)]) for f in range(30)]
    tubes = _tubes(dets)
    assert len(tubes) == 2
    a, b = sorted(tubes, key=lambda t: t.box[0])
    assert (a.start, a.end, a.length) == (0, 29, 30) and (b.start, b.end) == (0, 29)
    assert a.box == pytest.approx((10, 20, 60 + 14.5, 80))  # union of the moving boxes
    assert b.box == pytest.approx((200 - 14.5, 25, 250, 85 + 29 * 0.2))
    assert len(a.boxes) == 30 and a.boxes[7] == pytest.approx(_shift(left, 3.5))


def test_face_leaving_ends_its_tube_and_a_return_starts_a_new_one():
    face = (100, 100, 200, 220)
    dets = [(f, [face] if f < 20 or f >= 25 else []) for f in range(40)]
    tubes = _tubes(dets)
    assert [(t.start, t.end, t.length) for t in tubes] == [(0, 19, 20), (25, 39, 15)]
    assert [t.length for t in long_tubes(tubes, 20)] == [20]
    assert long_tubes(tubes, 21) == []


def test_tube_compares_with_its_initial_box_not_the_previous_one():
    # A 100x100 box drifting 1 px a frame: consecutive boxes overlap by 98 %, but the
    # IoU with the initial box, (100 - d) / (100 + d), reaches 0.25 at d = 60.
    face = (0.0, 0.0, 100.0, 100.0)
    dets = [(f, [_shift(face, f)]) for f in range(80)]
    tubes = _tubes(dets, iou_with_initial=0.25)
    assert [(t.start, t.end) for t in tubes] == [(0, 59), (60, 79)]
    assert tubes[0].box == pytest.approx((0, 0, 159, 100))
    # A lower threshold keeps the tube longer: (100 - d) / (100 + d) > 0.1 until d = 82.
    assert [(t.start, t.end) for t in _tubes(dets, iou_with_initial=0.1)] == [(0, 79)]


def test_iou_threshold_is_strict_and_picks_the_best_tube():
    builder = TubeBuilder(0.25)
    builder.update(0, [(0, 0, 100, 100), (120, 0, 220, 100)])
    # IoU exactly 0.25 with the first tube's initial box does not continue it.
    at_quarter = _shift((0, 0, 100, 100), 60)
    assert iou((0, 0, 100, 100), at_quarter) == pytest.approx(0.25)
    assert builder.would_change([at_quarter, (120, 0, 220, 100)])
    # A box overlapping both tubes joins the one it overlaps most.
    builder.update(1, [(10, 0, 110, 100), (115, 0, 215, 100)])
    t0, t1 = builder.tubes()
    assert t0.end == 1 and t1.end == 1
    assert t0.boxes[1] == (10, 0, 110, 100) and t1.boxes[1] == (115, 0, 215, 100)
    assert not builder.would_change([(5, 0, 105, 100), (118, 0, 218, 100)])
    assert builder.would_change([(5, 0, 105, 100)])  # the second face is gone
    with pytest.raises(ValueError):
        builder.update(1, [])


def test_sparse_detections_span_the_gaps():
    face = (50, 50, 150, 170)
    tubes = _tubes([(0, [face]), (5, [_shift(face, 4)]), (10, [_shift(face, 8)])])
    assert [(t.start, t.end, t.length) for t in tubes] == [(0, 10, 11)]
    assert sorted(tubes[0].boxes) == [0, 5, 10]


def test_enlarge_is_fomm_aspect_preserving():
    assert enlarge((100, 100, 200, 200), 0.1) == pytest.approx((90, 90, 210, 210))
    # A tall box (50 x 100) grows to a 120 x 120 square: width_increase = (1.2*100 - 50) / 100.
    assert enlarge((100, 100, 150, 200), 0.1) == pytest.approx((65, 90, 185, 210))
    # A wide box likewise.
    assert enlarge((0, 0, 100, 50), 0.1) == pytest.approx((-10, -35, 110, 85))


def test_square_in_frame_centred_shifted_and_shrunk():
    # Centred; the side is the box's, rounded up to even, plus 2 px of slack.
    assert square_in_frame((90, 90, 210, 210), 640, 480) == (90, 90, 212, 212)
    # Near the left/top edge: shifted inside, still square (FOMM would clip to 110 x 120).
    assert square_in_frame((-10, -20, 110, 100), 640, 480) == (0, 0, 122, 122)
    # Near the right/bottom edge.
    assert square_in_frame((560, 400, 680, 520), 640, 480) == (518, 358, 640, 480)
    # Larger than the frame: shrunk to the shorter side about its centre, moved inside.
    assert square_in_frame((-100, -100, 600, 600), 640, 480) == (10, 0, 490, 480)
    assert square_in_frame((300, -50, 900, 550), 640, 480) == (160, 0, 640, 480)
    # Odd frame sizes and fractional boxes: even corners, the box inside the square.
    assert square_in_frame((10.3, 11.7, 101.1, 95.0), 321, 241) == (8, 6, 102, 100)
    # Sticking out of an odd-sized frame: flush with its last even column/row.
    assert square_in_frame((200, 150, 330, 250), 321, 241) == (188, 108, 320, 240)


def test_crop_box_properties_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(500):
        w, h = int(rng.integers(64, 1000)), int(rng.integers(64, 1000))
        x0, y0 = rng.uniform(-50, w), rng.uniform(-50, h)
        box = (x0, y0, x0 + rng.uniform(4, w / 2), y0 + rng.uniform(4, h / 2))
        c = crop_box(box, w, h, 0.1)
        side = c[2] - c[0]
        assert side == c[3] - c[1] and side % 2 == 0 and side > 0
        assert c[0] % 2 == 0 and c[1] % 2 == 0
        assert 0 <= c[0] and 0 <= c[1] and c[2] <= w and c[3] <= h
        big = enlarge(box, 0.1)
        fits = max(big[2] - big[0], big[3] - big[1]) <= min(w, h) - 2
        inside = big[0] >= 0 and big[1] >= 0 and big[2] <= w and big[3] <= h
        if fits and inside:  # the enlarged box fits the frame: the crop holds all of it
            assert c[0] <= big[0] and c[1] <= big[1]
            assert c[2] >= big[2] - 1 and c[3] >= big[3] - 1  # odd frame sides may lose 1 px
