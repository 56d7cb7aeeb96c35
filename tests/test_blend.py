"""Paste-back: only the lower face changes; the crop geometry is the reference's."""

import numpy as np

from lipsyncd.engine.blend import MODEL_SIZE, crop_rect, lower_face_mask, model_crop, paste
from lipsyncd.engine.faces.track import KEPT, LIPS, NOSE, OVAL


def synthetic_points(cx=100.0, cy=100.0, r=40.0) -> np.ndarray:
    """Kept landmarks of a round face centred at (cx, cy): oval on a circle, lips and nose inside."""
    pts = np.zeros((len(KEPT), 2), np.float32)
    n = OVAL.stop - OVAL.start
    ang = np.linspace(-np.pi / 2, 3 * np.pi / 2, n, endpoint=False)
    pts[OVAL] = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)
    m = LIPS.stop - LIPS.start
    ang = np.linspace(0, 2 * np.pi, m, endpoint=False)
    pts[LIPS] = np.stack([cx + 0.35 * r * np.cos(ang), cy + 0.5 * r + 0.12 * r * np.sin(ang)], 1)
    pts[NOSE] = [cx, cy + 0.1 * r]
    brows = slice(LIPS.stop, NOSE.start)
    pts[brows] = np.stack([np.linspace(cx - 0.6 * r, cx + 0.6 * r, brows.stop - brows.start),
                           np.full(brows.stop - brows.start, cy - 0.45 * r)], 1)
    return pts


def test_crop_rect_applies_pads_and_clips():
    assert crop_rect(np.array([10, 20, 50, 60.0]), (0, 10, 0, 0), 100, 100) == (10, 20, 50, 70)
    assert crop_rect(np.array([-5, 20, 50, 95.0]), (5, 10, 3, 3), 100, 100) == (0, 15, 53, 100)


def test_model_crop_is_96_square():
    frame = np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)
    assert model_crop(frame, (10, 20, 110, 140)).shape == (MODEL_SIZE, MODEL_SIZE, 3)


def test_mask_covers_mouth_not_eyes_and_fades_to_zero_at_border():
    pts = synthetic_points()
    rect = (50, 50, 150, 150)
    mask = lower_face_mask(pts, rect)
    assert mask.shape == (100, 100)
    assert mask[120 - 50, 100 - 50] > 0.9          # mouth centre: y = cy + 0.5 r = 120
    assert mask[85 - 50, 85 - 50] == 0.0           # eye level, above the nose
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0


def test_paste_changes_only_masked_pixels_bit_exactly_elsewhere():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (200, 200, 3), np.uint8)
    before = frame.copy()
    generated = np.full((MODEL_SIZE, MODEL_SIZE, 3), 255, np.uint8)
    rect = (50, 50, 150, 150)
    pts = synthetic_points()
    paste(frame, generated, rect, pts, weight=1.0)
    mask = np.zeros((200, 200), np.float32)
    mask[50:150, 50:150] = lower_face_mask(pts, rect)
    unchanged = mask == 0
    assert np.array_equal(frame[unchanged], before[unchanged])
    assert (frame[mask > 0.99] >= 252).all()
    half = frame.copy()
    frame[:] = before
    paste(frame, generated, rect, pts, weight=0.0)
    assert np.array_equal(frame, before)
    assert not np.array_equal(half, before)
