"""Where the network looks and where its output goes back: crop geometry and feathered paste-back.

Wav2Lip re-draws the whole 96×96 face crop, but only its lower half carries the new mouth; the
rest is a blurrier copy of the input. Pasting the square back (as the reference does) leaves a
visible box and softens the eyes. We paste through a mask that covers the lower face only
(jaw, chin, lips, from the nose down), feathered so no edge shows, and weighted by the track's
fade so a face that appears or disappears does not pop. Everything outside that mask is the
original frame, bit for bit.

Frames stay in the codec's yuv420p (:mod:`.yuv`): the crop is converted to BGR for the network
after it is shrunk to 96×96, and the paste converts and blends only the box around the mask, so
the cost follows the mouth's size, not the frame's, and every sample outside the mask reaches
the encoder exactly as the decoder gave it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .faces.track import LIPS, NOSE, OVAL
from .yuv import I420, TurnedView, YuvMatrix

Box = tuple[int, int, int, int]
"""x0, y0, x1, y1 in pixels, x1/y1 exclusive."""

MODEL_SIZE = 96
MASK_SIZE = 128
"""Largest side, in pixels, at which the paste mask is drawn (see :func:`lower_face_mask`)."""


def crop_rect(box: np.ndarray, pads: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The reference's crop: the face box grown by pads (top, bottom, left, right), clipped to the frame."""
    top, bottom, left, right = pads
    x0 = int(max(0, round(box[0]) - left))
    y0 = int(max(0, round(box[1]) - top))
    x1 = int(min(width, round(box[2]) + right))
    y1 = int(min(height, round(box[3]) + bottom))
    return x0, y0, x1, y1


def model_crop(frame: I420 | TurnedView, rect: tuple[int, int, int, int], matrix: YuvMatrix) -> np.ndarray:
    """The 96×96 BGR crop the network sees (bilinear, cv2.resize's default, as in training)."""
    x0, y0, x1, y1 = rect
    cx0, cy0, cx1, cy1 = x0 // 2, y0 // 2, (x1 + 1) // 2, (y1 + 1) // 2
    return matrix.bgr_of(frame.y[y0:y1, x0:x1], frame.u[cy0:cy1, cx0:cx1], frame.v[cy0:cy1, cx0:cx1],
                         (MODEL_SIZE, MODEL_SIZE))


def lower_face_mask(points: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """Float32 mask (crop height × width) in 0..1: the lower face below the nose, feathered inwards.

    The polygon is the convex hull of the face-oval points below the nose, the lips and the nose
    base; it is shrunk by the feather radius before blurring, so the mask reaches zero inside the
    jaw line and never touches the crop's border (nothing outside the crop can change). It is
    drawn at most :data:`MASK_SIZE` pixels wide and scaled up: a feathered edge loses nothing
    that shows, and the cost stays that of a small face however large the face is.
    """
    x0, y0, x1, y1 = rect
    return _mask_region(_small_mask(points, rect), (x1 - x0, y1 - y0), (0, 0, x1 - x0, y1 - y0))


def _small_mask(points: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The mask of :func:`lower_face_mask` as drawn: at most :data:`MASK_SIZE` pixels on its longer side."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    scale = min(1.0, MASK_SIZE / max(w, h))
    if scale < 1.0:
        sx0, sy0 = round(x0 * scale), round(y0 * scale)
        return _small_mask(points * np.float32(scale), (sx0, sy0, sx0 + round(w * scale), sy0 + round(h * scale)))
    local = points - np.array([x0, y0], np.float32)
    nose_y = float(np.nanmax(local[NOSE, 1]))
    oval = local[OVAL]
    below = oval[oval[:, 1] >= nose_y]
    hull = cv2.convexHull(np.concatenate([below, local[LIPS], local[NOSE]]).astype(np.float32))
    mask: np.ndarray = np.zeros((h, w), np.float32)  # float32 still; cv2's stubs type its results loosely
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0, lineType=cv2.LINE_AA)
    feather = max(2, int(0.06 * w))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (feather, feather)))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=feather / 2)
    mask[[0, -1], :] = 0
    mask[:, [0, -1]] = 0
    return mask


def _mask_region(small: np.ndarray, size: tuple[int, int], region: tuple[int, int, int, int]) -> np.ndarray:
    """``region`` (x0, y0, x1, y1 in the crop) of the small mask scaled up to the crop's ``size``
    (w, h), zero on the crop's border: only the region is computed."""
    rx0, ry0, rx1, ry1 = region
    if small.shape[::-1] == size:
        return small[ry0:ry1, rx0:rx1].copy()
    mask = _resampled(small, size, region)
    w, h = size
    mask[:, [x - rx0 for x in (0, w - 1) if rx0 <= x < rx1]] = 0
    mask[[y - ry0 for y in (0, h - 1) if ry0 <= y < ry1], :] = 0
    return mask


def _resampled(image: np.ndarray, size: tuple[int, int], region: tuple[int, int, int, int],
               step: int = 1) -> np.ndarray:
    """``region`` of ``image`` scaled to ``size`` (w, h) bilinearly, as ``cv2.resize`` places its
    samples, computing only that region; ``step`` 2 samples the centre of every 2×2 block (the
    chroma of 4:2:0)."""
    rx0, ry0, rx1, ry1 = region
    fx, fy = image.shape[1] / size[0], image.shape[0] / size[1]
    to_source = np.array([[step * fx, 0.0, (rx0 + step / 2) * fx - 0.5],
                          [0.0, step * fy, (ry0 + step / 2) * fy - 0.5]])
    out_size = ((rx1 - rx0) // step, (ry1 - ry0) // step)
    return cv2.warpAffine(image, to_source, out_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def paste(frame: I420 | TurnedView, generated: np.ndarray, rect: tuple[int, int, int, int], points: np.ndarray,
          weight: float, matrix: YuvMatrix) -> None:
    """Blend the network's BGR face (any square size) into ``frame`` (in place) through the lower-face mask.

    Only the mask's bounding box, grown to even coordinates so that it covers whole chroma
    samples, is touched, and only that box is ever computed: the mask is scaled up to it, and the
    face is converted to YUV at its own (small) size and scaled to the box, luma at full and
    chroma at half resolution. Chroma blends with the mask averaged over each 2×2 block.
    """
    x0, y0, x1, y1 = rect
    size = (x1 - x0, y1 - y0)
    small = _small_mask(points, rect)
    box = _paste_box(small, rect, frame.width, frame.height)
    if box is None or weight <= 0:
        return
    bx0, by0, bx1, by1 = box
    region = (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0)
    alpha = _mask_region(small, size, region)
    if weight < 1:
        alpha *= np.float32(weight)
    face = matrix.yuv_of(generated)
    _blend_into(frame.y[by0:by1, bx0:bx1], _resampled(np.ascontiguousarray(face[..., 0]), size, region), alpha)
    chroma_alpha = cv2.resize(alpha, ((bx1 - bx0) // 2, (by1 - by0) // 2), interpolation=cv2.INTER_AREA)
    chroma = _resampled(np.ascontiguousarray(face[..., 1:]), size, region, step=2)
    _blend_into(frame.u[by0 // 2:by1 // 2, bx0 // 2:bx1 // 2], chroma[..., 0], chroma_alpha)
    _blend_into(frame.v[by0 // 2:by1 // 2, bx0 // 2:bx1 // 2], chroma[..., 1], chroma_alpha)


def first_face_row(points: np.ndarray, rect: Box, face_size: int, width: int, height: int) -> int:
    """The first row of a ``face_size`` square face that :func:`paste` reads for this face in a
    view of ``width`` × ``height`` (``face_size`` when it reads none): rows above it never reach the
    picture, so the network need not draw them."""
    box = _paste_box(_small_mask(points, rect), rect, width, height)
    if box is None:
        return face_size
    # the row of _resampled's first luma sample (chroma's lie lower); bilinear reads it and the next
    scale = face_size / (rect[3] - rect[1])
    return max(0, int(np.floor((box[1] - rect[1] + 0.5) * scale - 0.5)) - 1)  # -1: warpAffine rounds its positions


def _paste_box(small: np.ndarray, rect: Box, width: int, height: int) -> Box | None:
    """The part of a ``width`` × ``height`` view that :func:`paste` touches (x0, y0, x1, y1): the
    support of the ``small`` mask scaled up to ``rect`` (bilinear reaches one small pixel further),
    grown to even coordinates so that it covers whole chroma samples; None when it is empty. The
    mask is zero on the crop's border, so the box lies inside the crop."""
    x0, y0, x1, y1 = rect
    left, top, box_w, box_h = cv2.boundingRect((small > 0).view(np.uint8))
    if box_w == 0:
        return None
    fx, fy = (x1 - x0) / small.shape[1], (y1 - y0) / small.shape[0]
    bx0 = max(x0, x0 + int((left - 1) * fx)) & ~1
    by0 = max(y0, y0 + int((top - 1) * fy)) & ~1
    bx1 = min(width, x1, x0 + int(np.ceil((left + box_w + 1) * fx)) + 1) & ~1
    by1 = min(height, y1, y0 + int(np.ceil((top + box_h + 1) * fy)) + 1) & ~1
    if bx1 <= bx0 or by1 <= by0:
        return None
    if bx0 < x0 or by0 < y0:  # an odd crop corner: the even box starts one sample before the crop
        bx0, by0 = max(bx0, (x0 + 1) & ~1), max(by0, (y0 + 1) & ~1)
    return bx0, by0, bx1, by1


def _blend_into(plane: np.ndarray, face: np.ndarray, alpha: np.ndarray) -> None:
    """plane += (face - plane) × alpha, rounded; where alpha is 0 the sample is kept exactly.
    ``face`` is overwritten (it is scratch)."""
    original = plane.astype(np.float32)
    face -= original
    face *= alpha
    face += original
    face += 0.5
    np.clip(face, 0, 255, out=face)
    plane[:] = face.astype(np.uint8)
