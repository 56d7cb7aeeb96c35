"""Paste-back: only the lower face changes, in the frame's own YUV; the crop geometry is the reference's."""

import cv2
import numpy as np
import pytest

from lipsyncd.engine import blend
from lipsyncd.engine.blend import MODEL_SIZE, crop_rect, lower_face_mask, model_crop, mouth_mask, paste
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
    yuv = np.dstack(matrix.yuv_planes(bgr))
    back = cv2.transform(yuv, matrix.to_bgr)
    assert np.abs(back - bgr).max() < 1e-3
    white = [float(plane.reshape(-1)[0]) for plane in matrix.yuv_planes(np.full((1, 1, 3), 255, np.uint8))]
    assert white == pytest.approx([235 if color_range == 1 else 255, 128, 128], abs=1e-3)


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


@pytest.mark.parametrize(("rect", "centre", "radius"), [
    ((50, 50, 150, 150), (100, 100), 40.0),   # a face filling its crop
    ((40, 30, 160, 170), (100, 88), 55.0),    # the jaw at the crop's sides and bottom
    ((0, 0, 600, 640), (300, 330), 300.0),    # a large face: drawn small
    ((10, 11, 47, 50), (28, 29), 15.0),       # a small face
])
def test_mask_drawn_around_the_mouth_is_the_mask_of_the_whole_crop(rect, centre, radius):
    """The mask is eroded and blurred only around the lower face: sample for sample what the
    same steps give on the whole crop."""
    from lipsyncd.engine.blend import MASK_SIZE, _small_mask

    pts = synthetic_points(*centre, r=radius)
    drawn = _small_mask(pts, rect)
    h, w = drawn.shape
    scale = min(1.0, MASK_SIZE / max(rect[2] - rect[0], rect[3] - rect[1]))
    local = pts * np.float32(scale) - np.array([round(rect[0] * scale), round(rect[1] * scale)], np.float32)
    below = local[OVAL][local[OVAL][:, 1] >= local[NOSE, 1].max()]
    hull = np.round(cv2.convexHull(np.concatenate([below, local[LIPS], local[NOSE]]))).astype(np.int32)
    whole = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(whole, hull, 1.0, lineType=cv2.LINE_AA)
    feather = max(2, int(0.06 * w))
    whole = cv2.GaussianBlur(cv2.erode(whole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (feather, feather))),
                             (0, 0), sigmaX=feather / 2)
    whole[[0, -1]] = 0
    whole[:, [0, -1]] = 0
    assert np.array_equal(drawn, whole)
    assert drawn.max() > 0.9


def test_paste_changes_only_masked_samples_bit_exactly_elsewhere():
    frame = random_i420(200, 200, 1)
    before = I420(frame.data.copy())
    generated = np.full((MODEL_SIZE, MODEL_SIZE, 3), 255, np.uint8)
    rect = (51, 49, 151, 149)  # odd corner: the paste box is grown to even coordinates
    pts = synthetic_points(101, 99)
    paste(frame, generated, mouth_mask(pts, rect, 200, 200), 1.0, BT601)
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
    paste(frame, generated, mouth_mask(pts, rect, 200, 200), 0.0, BT601)
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
    """The network may leave every row above the mask's ``first_face_row`` undrawn: a face whose rows
    above it are noise pastes exactly the same frame; the rows just below it show."""
    width, height = 320, 320 if rect[3] > 200 else 190
    pts = synthetic_points(*centre, r=radius)
    rect = (rect[0], rect[1], min(rect[2], width), min(rect[3], height))
    mask = mouth_mask(pts, rect, width, height)
    assert mask is not None
    first = mask.first_face_row(MODEL_SIZE)
    assert 24 <= first < MODEL_SIZE // 2 + 8
    generated = np.random.default_rng(2).integers(0, 255, (MODEL_SIZE, MODEL_SIZE, 3), np.uint8)
    noisy = generated.copy()
    noisy[:first] = np.random.default_rng(3).integers(0, 255, (first, MODEL_SIZE, 3), np.uint8)
    frames = [random_i420(width, height, 4), random_i420(width, height, 4)]
    for frame, face in zip(frames, (generated, noisy), strict=True):
        paste(frame, face, mask, 1.0, BT601)
    assert np.array_equal(frames[0].data, frames[1].data)
    # Not far above what shows: the rows just below ``first`` reach the frame.
    noisy[first:first + 12] = 255 - noisy[first:first + 12]
    frame = random_i420(width, height, 4)
    paste(frame, noisy, mask, 1.0, BT601)
    assert not np.array_equal(frames[0].data, frame.data)


@pytest.mark.parametrize(("rect", "centre", "radius"), [
    ((51, 49, 151, 149), (101, 99), 40.0),
    ((10, 11, 47, 50), (28, 29), 15.0),
    ((0, 0, 300, 320), (150, 150), 120.0),
])
def test_the_feathers_faint_tail_changes_nothing(rect, centre, radius, monkeypatch):
    """The paste's box leaves out where the mask is below :data:`NO_CHANGE` (a few rows of the
    feather's tail, which the network then need not draw): a paste over the mask's whole support
    gives the very same frame, for faces and frames of samples at the ends of the range."""
    width, height = 320, 320
    pts = synthetic_points(*centre, r=radius)
    tight = mouth_mask(pts, rect, width, height)
    monkeypatch.setattr(blend, "NO_CHANGE", np.finfo(np.float32).tiny)  # the whole support (> 0)
    whole = mouth_mask(pts, rect, width, height)
    assert tight is not None and whole is not None
    assert tight.box[1] > whole.box[1] and tight.first_face_row(MODEL_SIZE) > whole.first_face_row(MODEL_SIZE)
    for seed in range(3):
        extreme = np.random.default_rng(seed).choice([0, 255], (MODEL_SIZE, MODEL_SIZE, 3)).astype(np.uint8)
        frame = random_i420(width, height, 10 + seed)
        frame.data[:] = np.where(frame.data > 127, 0, 255)  # samples at the ends of the range
        frames = [frame, I420(frame.data.copy())]
        for frame, mask in zip(frames, (tight, whole), strict=True):
            paste(frame, extreme, mask, 1.0, BT601)
        assert np.array_equal(frames[0].data, frames[1].data)


def bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``image`` sampled at source positions ``xs`` × ``ys`` (edges repeated), in float64."""
    def taps(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.clip(positions, 0, n - 1)
        first = np.floor(p).astype(int)
        return first, np.minimum(first + 1, n - 1), p - first
    x0, x1, fx = taps(xs, image.shape[1])
    y0, y1, fy = taps(ys, image.shape[0])
    rows = image[y0] * (1 - fy[:, None]) + image[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def reference_paste(frame: I420, face: np.ndarray, rect, small: np.ndarray,
                    weight: float) -> tuple[I420, np.ndarray, np.ndarray]:
    """The paste as plain float64 arithmetic: mask and face scaled to the crop bilinearly (at
    cv2.resize's sample positions), chroma sampled at the centre of each 2×2 block with the mask
    averaged over it, blended, rounded. Returns the frame and the luma and chroma masks."""
    out = I420(frame.data.copy())
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0

    def grid(n: int, size: int, source: int, first: float = 0.0, step: int = 1) -> np.ndarray:
        return (first + step * np.arange(n) + step / 2) * source / size - 0.5

    alpha = np.zeros((frame.height, frame.width))
    alpha[y0:y1, x0:x1] = bilinear(small.astype(np.float64), grid(w, w, small.shape[1]), grid(h, h, small.shape[0]))
    alpha[y0:y1, x0:x1][[0, -1]] = 0
    alpha[y0:y1, x0:x1][:, [0, -1]] = 0
    alpha *= weight
    yuv = face.astype(np.float64) @ BT601.to_yuv[:, :3].T.astype(np.float64) + BT601.to_yuv[:, 3]
    size = face.shape[0]
    luma = np.zeros_like(alpha)
    luma[y0:y1, x0:x1] = bilinear(yuv[..., 0], grid(w, w, size), grid(h, h, size))
    out.y[:] = np.floor(frame.y + (luma - frame.y) * alpha + 0.5)
    chroma_alpha = alpha.reshape(frame.height // 2, 2, frame.width // 2, 2).mean(axis=(1, 3))
    xs = grid(frame.width // 2, w, size, -x0, 2)  # chroma column c covers luma columns 2c, 2c + 1
    ys = grid(frame.height // 2, h, size, -y0, 2)
    for k, plane in ((1, out.u), (2, out.v)):
        original = plane.astype(np.float64)
        plane[:] = np.floor(original + (bilinear(yuv[..., k], xs, ys) - original) * chroma_alpha + 0.5)
    return out, alpha, chroma_alpha


def talking_face(seed: int) -> np.ndarray:
    """A face-like BGR square: smooth skin shading, a dark mouth with hard edges, teeth, grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:MODEL_SIZE, :MODEL_SIZE].astype(np.float32)
    face = np.dstack([90 + xx, 120 + 0.5 * yy, 170 + 0.3 * (xx - yy)])
    cv2.ellipse(face, (48, 70), (18, 8), 0, 0, 360, (40, 30, 90), -1)
    cv2.rectangle(face, (38, 64), (58, 68), (235, 240, 240), -1)
    face += rng.normal(0, 6, face.shape)
    return np.clip(face, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("rect", "centre", "radius", "weight", "turns"), [
    ((51, 49, 151, 149), (101, 99), 40.0, 1.0, 0),   # odd corner
    ((40, 31, 160, 171), (100, 95), 45.0, 0.4, 0),   # a fade; an odd top
    ((10, 11, 47, 50), (28, 29), 15.0, 1.0, 0),      # a small face: the network's face shrinks
    ((0, 0, 300, 300), (150, 140), 120.0, 1.0, 0),   # a large face: the mask is drawn small
    ((61, 40, 171, 150), (116, 92), 42.0, 0.7, 1),   # a face lying sideways, pasted through a turned view
])
def test_paste_is_the_float_blend_rounded(rect, centre, radius, weight, turns):
    """Inside the mask the paste is a plain float blend up to rounding (≤ 1 level), on a
    face-like picture and on noise (the sharpest edges a face can have); outside it, bit-exact."""
    width, height = (300, 320) if turns == 0 else (240, 220)
    pts = synthetic_points(*centre, r=radius)
    for face in (talking_face(5), np.random.default_rng(6).integers(0, 256, (MODEL_SIZE, MODEL_SIZE, 3), np.uint8)):
        frame = random_i420(width, height, 7)
        frame.data[:] = cv2.GaussianBlur(frame.data, (0, 0), 2)
        view = frame.turned(turns)
        mask = mouth_mask(pts, rect, view.width, view.height)
        assert mask is not None
        upright = I420.from_planes(view.y, view.u, view.v)
        expected, alpha, chroma_alpha = reference_paste(upright, face, rect, mask.small, weight)
        paste(view, face, mask, weight, BT601)
        for got, want, before, outside in zip((view.y, view.u, view.v), (expected.y, expected.u, expected.v),
                                              (upright.y, upright.u, upright.v),
                                              (alpha == 0, chroma_alpha == 0, chroma_alpha == 0), strict=True):
            assert np.abs(got.astype(int) - want).max() <= 1
            assert np.array_equal(got[outside], before[outside])
            assert (got[~outside] != before[~outside]).mean() > 0.3
