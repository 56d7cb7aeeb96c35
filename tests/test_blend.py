"""Paste-back: only the lower face changes, in the frame's own YUV; the crop geometry is the reference's."""

import cv2
import numpy as np
import pytest

from lipsyncd.engine.blend import MODEL_SIZE, crop_rect, first_face_row, lower_face_mask, model_crop, paste
from lipsyncd.engine.faces.track import KEPT, LIPS, NOSE, OVAL
from lipsyncd.engine.yuv import I420, YuvMatrix

BT601 = YuvMatrix.of(6, 1)


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


def random_i420(width: int, height: int, seed: int) -> I420:
    return I420(np.random.default_rng(seed).integers(0, 255, (height * 3 // 2, width), np.uint8))


def test_model_crop_is_the_bgr_crop_resized():
    """The crop converted from YUV matches OpenCV's own BT.601 conversion of the whole frame."""
    frame = random_i420(300, 200, 0)
    frame.data[:] = cv2.GaussianBlur(frame.data, (0, 0), 3)  # smooth, so chroma siting hardly matters
    rect = (10, 20, 110, 140)
    crop = model_crop(frame, rect, BT601)
    assert crop.shape == (MODEL_SIZE, MODEL_SIZE, 3) and crop.dtype == np.uint8
    bgr = cv2.cvtColor(frame.data, cv2.COLOR_YUV2BGR_I420)
    expected = cv2.resize(bgr[20:140, 10:110], (MODEL_SIZE, MODEL_SIZE))
    assert np.abs(crop.astype(int) - expected).mean() < 1.5


@pytest.mark.parametrize("space, color_range", [(6, 1), (1, 1), (1, 2), (9, 1)])
def test_colour_matrices_round_trip(space, color_range):
    matrix = YuvMatrix.of(space, color_range)
    bgr = np.random.default_rng(2).integers(0, 256, (16, 16, 3), np.uint8)
    yuv = matrix.yuv_of(bgr)
    back = cv2.transform(yuv, matrix.to_bgr)
    assert np.abs(back - bgr).max() < 1e-3
    grey = matrix.yuv_of(np.full((1, 1, 3), 255, np.uint8))[0, 0]
    assert grey == pytest.approx([235 if color_range == 1 else 255, 128, 128], abs=1e-3)


@pytest.mark.parametrize("zoom", [1, 4])  # 4: a 400 px face, whose mask is drawn small and scaled up
def test_mask_covers_mouth_not_eyes_and_fades_to_zero_at_border(zoom):
    pts = synthetic_points() * zoom
    rect = (50 * zoom, 50 * zoom, 150 * zoom, 150 * zoom)
    mask = lower_face_mask(pts, rect)
    assert mask.shape == (100 * zoom, 100 * zoom)
    assert mask[70 * zoom, 50 * zoom] > 0.9          # mouth centre: y = cy + 0.5 r = 120
    assert mask[35 * zoom, 35 * zoom] == 0.0         # eye level, above the nose
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
    if zoom > 1:  # the same shape as the small face's, scaled
        small = cv2.resize(lower_face_mask(synthetic_points(), (50, 50, 150, 150)), mask.shape[::-1])
        assert np.abs(mask - small).mean() < 0.02


def test_paste_changes_only_masked_samples_bit_exactly_elsewhere():
    frame = random_i420(200, 200, 1)
    before = I420(frame.data.copy())
    generated = np.full((MODEL_SIZE, MODEL_SIZE, 3), 255, np.uint8)
    rect = (51, 49, 151, 149)  # odd corner: the paste box is grown to even coordinates
    pts = synthetic_points(101, 99)
    paste(frame, generated, rect, pts, 1.0, BT601)
    mask = np.zeros((200, 200), np.float32)
    mask[49:149, 51:151] = lower_face_mask(pts, rect)
    unchanged = mask == 0
    assert np.array_equal(frame.y[unchanged], before.y[unchanged])
    chroma_unchanged = cv2.resize(mask, (100, 100), interpolation=cv2.INTER_AREA) == 0
    assert np.array_equal(frame.u[chroma_unchanged], before.u[chroma_unchanged])
    assert np.array_equal(frame.v[chroma_unchanged], before.v[chroma_unchanged])
    assert (frame.y[mask > 0.99] >= 232).all()          # white (235 in limited range), 1 % of the original
    assert (np.abs(frame.u[cv2.resize(mask, (100, 100), interpolation=cv2.INTER_AREA) > 0.99].astype(int) - 128) <= 1).all()
    half = frame.data.copy()
    frame.data[:] = before.data
    paste(frame, generated, rect, pts, 0.0, BT601)
    assert np.array_equal(frame.data, before.data)
    assert not np.array_equal(half, before.data)


@pytest.mark.parametrize(("rect", "centre", "radius"), [
    ((51, 49, 151, 149), (101, 99), 40.0),    # odd corner, face filling the crop
    ((40, 30, 160, 170), (100, 95), 45.0),    # taller crop (bottom pad), upper face high in it
    ((10, 11, 47, 50), (28, 29), 15.0),       # a small face: the crop is scaled up to 96
    ((0, 0, 300, 320), (150, 150), 120.0),    # a large face: the mask is drawn small and scaled up
    ((120, 100, 200, 200), (160, 140), 38.0), # the crop runs off the frame's bottom right
])
def test_rows_above_first_face_row_never_reach_the_frame(rect, centre, radius):
    """The network may leave every row above :func:`first_face_row` undrawn: a face whose rows
    above it are noise pastes exactly the same frame; the rows just below it show."""
    width, height = 320, 320 if rect[3] > 200 else 190
    pts = synthetic_points(*centre, r=radius)
    rect = (rect[0], rect[1], min(rect[2], width), min(rect[3], height))
    first = first_face_row(pts, rect, MODEL_SIZE, width, height)
    assert 24 <= first < MODEL_SIZE // 2 + 8
    generated = np.random.default_rng(2).integers(0, 255, (MODEL_SIZE, MODEL_SIZE, 3), np.uint8)
    noisy = generated.copy()
    noisy[:first] = np.random.default_rng(3).integers(0, 255, (first, MODEL_SIZE, 3), np.uint8)
    frames = [random_i420(width, height, 4), random_i420(width, height, 4)]
    for frame, face in zip(frames, (generated, noisy), strict=True):
        paste(frame, face, rect, pts, 1.0, BT601)
    assert np.array_equal(frames[0].data, frames[1].data)
    # Not far above what shows: the box reaches a little beyond the mask, whose feather's last
    # rows round to no change (measured 5-9 rows on these faces).
    noisy[first:first + 12] = 255 - noisy[first:first + 12]
    frame = random_i420(width, height, 4)
    paste(frame, noisy, rect, pts, 1.0, BT601)
    assert not np.array_equal(frames[0].data, frame.data)
