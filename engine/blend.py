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

The mask is drawn once per face (:func:`mouth_mask`, in the frame loop's network worker) and
serves both the paste and :meth:`MouthMask.first_face_row`, which tells the network which rows
it need not draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .faces.track import LIPS, NOSE, OVAL
from .yuv import I420, TurnedView, YuvMatrix

Box = tuple[int, int, int, int]
"""x0, y0, x1, y1 in pixels, x1/y1 exclusive."""

MODEL_SIZE = 96
MASK_SIZE = 128
"""Largest side, in pixels, at which the paste mask is drawn (see :func:`lower_face_mask`)."""
NO_CHANGE = 0.5 / 255
"""Mask values below this change no 8-bit sample: a face and a frame differ by 255 levels at
most, so the blend moves a sample by less than half a level, which rounds away. The paste's box
(and so the rows the network draws) covers only where the mask reaches it: the feathered edge's
faint tail, a few rows above the nose, would otherwise count."""


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


def lower_face_mask(points: np.ndarray, rect: Box) -> np.ndarray:
    """Float32 mask (crop height × width) in 0..1: the lower face below the nose, feathered inwards.

    The polygon is the convex hull of the face-oval points below the nose, the lips and the nose
    base; it is shrunk by the feather radius before blurring, so the mask reaches zero inside the
    jaw line and never touches the crop's border (nothing outside the crop can change). It is
    drawn at most :data:`MASK_SIZE` pixels wide and scaled up: a feathered edge loses nothing
    that shows, and the cost stays that of a small face however large the face is.
    """
    x0, y0, x1, y1 = rect
    return _mask_region(_small_mask(points, rect), (x1 - x0, y1 - y0), (0, 0, x1 - x0, y1 - y0))


@dataclass(frozen=True)
class MouthMask:
    """One face's lower-face mask as drawn (small) and the part of the view the paste touches."""

    small: np.ndarray
    """The mask of :func:`lower_face_mask` at its drawn size (at most :data:`MASK_SIZE`)."""
    rect: Box
    """The face crop, in the (turned) view."""
    box: Box
    """What the paste touches (see :func:`_paste_box`): inside ``rect``, even coordinates."""

    def first_face_row(self, face_size: int) -> int:
        """The first row of a ``face_size`` square face that :func:`paste` reads: rows above it
        never reach the picture, so the network need not draw them."""
        # The row of the first luma sample (chroma's lie lower); bilinear reads it and the next.
        # -1: a margin for warpAffine (chroma), which rounds its positions.
        scale = face_size / (self.rect[3] - self.rect[1])
        return max(0, int(np.floor((self.box[1] - self.rect[1] + 0.5) * scale - 0.5)) - 1)

    def alpha(self) -> np.ndarray:
        """The mask over :attr:`box`, scaled up from the drawn one."""
        x0, y0, x1, y1 = self.rect
        bx0, by0, bx1, by1 = self.box
        return _mask_region(self.small, (x1 - x0, y1 - y0), (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0))


def mouth_mask(points: np.ndarray, rect: Box, width: int, height: int) -> MouthMask | None:
    """The mask that :func:`paste` blends this face through in a ``width`` × ``height`` view;
    None when it covers nothing (there is nothing to paste)."""
    small = _small_mask(points, rect)
    box = _paste_box(small, rect, width, height)
    return None if box is None else MouthMask(small, rect, box)


def _small_mask(points: np.ndarray, rect: Box) -> np.ndarray:
    """The mask of :func:`lower_face_mask` as drawn: at most :data:`MASK_SIZE` pixels on its longer side."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    scale = min(1.0, MASK_SIZE / max(w, h))
    if scale < 1.0:
        sx0, sy0 = round(x0 * scale), round(y0 * scale)
        return _small_mask(points * np.float32(scale), (sx0, sy0, sx0 + round(w * scale), sy0 + round(h * scale)))
    local = points - np.array([x0, y0], np.float32)
    nose_y = float(np.fmax.reduce(local[NOSE, 1]))  # nanmax, without its Python overhead
    oval = local[OVAL]
    below = oval[oval[:, 1] >= nose_y]
    outline = np.concatenate([below, local[LIPS], local[NOSE]]).astype(np.float32, copy=False)
    hull = np.round(cv2.convexHull(outline)).astype(np.int32)
    mask: np.ndarray = np.zeros((h, w), np.float32)  # float32 still; cv2's stubs type its results loosely
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA)
    feather = max(2, int(0.06 * w))
    sigma = feather / 2
    blur = int(round(sigma * 8 + 1)) | 1  # the kernel OpenCV picks for float images from sigma alone
    # Erode and blur only around the polygon (the lower face): a margin of zeros as wide as the
    # erosion and as the blur's reach beyond the eroded polygon keeps every sample as on the whole crop.
    hx, hy, hw, hh = cv2.boundingRect(hull)
    margin = max(feather, blur // 2 - feather // 2) + 2  # +2: the anti-aliased edge
    roi = mask[max(0, hy - margin):hy + hh + margin, max(0, hx - margin):hx + hw + margin]
    roi[:] = cv2.GaussianBlur(cv2.erode(roi, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (feather, feather))),
                              (blur, blur), sigmaX=sigma)
    _clear_border(mask)
    return mask


def _clear_border(mask: np.ndarray) -> None:
    """Zero the outermost rows and columns: nothing at the crop's edge may change."""
    mask[0] = mask[-1] = 0
    mask[:, 0] = mask[:, -1] = 0


def _mask_region(small: np.ndarray, size: tuple[int, int], region: Box) -> np.ndarray:
    """``region`` (x0, y0, x1, y1 in the crop) of the small mask scaled up to the crop's ``size``
    (w, h) bilinearly, zero on the crop's border; a fresh array."""
    rx0, ry0, rx1, ry1 = region
    if small.shape[::-1] == size:
        return small[ry0:ry1, rx0:rx1].copy()
    # The whole crop, then the region: cv2.resize is several times faster per sample than a
    # warpAffine of the region alone (and exact where warpAffine rounds its positions to 1/32).
    mask = cv2.resize(small, size)
    _clear_border(mask)
    return mask[ry0:ry1, rx0:rx1]


def _chroma_samples(image: np.ndarray, size: tuple[int, int], region: Box) -> np.ndarray:
    """The 4:2:0 chroma samples of ``region`` (even coordinates in the crop) of ``image`` scaled to
    the crop's ``size`` (w, h): bilinear at the centre of every 2×2 block, positions as
    ``cv2.resize`` places them. A chroma grid that starts on an odd crop coordinate is not one
    cv2.resize can make, so this is a warpAffine of the region alone."""
    rx0, ry0, rx1, ry1 = region
    fx, fy = image.shape[1] / size[0], image.shape[0] / size[1]
    to_source = np.array([[2 * fx, 0.0, (rx0 + 1) * fx - 0.5],
                          [0.0, 2 * fy, (ry0 + 1) * fy - 0.5]])
    return cv2.warpAffine(image, to_source, ((rx1 - rx0) // 2, (ry1 - ry0) // 2),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def paste(frame: I420 | TurnedView, generated: np.ndarray, mask: MouthMask, weight: float,
          matrix: YuvMatrix) -> None:
    """Blend the network's BGR face (any square size) into ``frame`` (in place) through ``mask``
    (:func:`mouth_mask` of the frame's view) at the track's fade ``weight``.

    Only the mask's box is touched and computed: the face is converted to YUV at its own (small)
    size and scaled to the crop, luma at full and chroma at half resolution, and blended with
    the mask (chroma with the mask averaged over each 2×2 block).
    """
    if weight <= 0:
        return
    x0, y0, x1, y1 = mask.rect
    bx0, by0, bx1, by1 = mask.box
    size = (x1 - x0, y1 - y0)
    alpha = mask.alpha()
    luma, *chroma = matrix.yuv_planes(generated)
    _blend_into(frame.y[by0:by1, bx0:bx1], cv2.resize(luma, size)[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0], alpha,
                weight)
    chroma_alpha = cv2.resize(alpha, ((bx1 - bx0) // 2, (by1 - by0) // 2), interpolation=cv2.INTER_AREA)
    region = (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0)
    for plane, samples in zip((frame.u, frame.v), chroma, strict=True):
        _blend_into(plane[by0 // 2:by1 // 2, bx0 // 2:bx1 // 2], _chroma_samples(samples, size, region),
                    chroma_alpha, weight)


def _paste_box(small: np.ndarray, rect: Box, width: int, height: int) -> Box | None:
    """The part of a ``width`` × ``height`` view that :func:`paste` touches (x0, y0, x1, y1): the
    support of the ``small`` mask scaled up to ``rect`` (bilinear reaches one small pixel further),
    grown to even coordinates so that it covers whole chroma samples; None when it is empty. The
    mask is zero on the crop's border, so the box lies inside the crop."""
    x0, y0, x1, y1 = rect
    left, top, box_w, box_h = cv2.boundingRect((small >= NO_CHANGE).view(np.uint8))
    if box_w == 0:
        return None
    fx, fy = (x1 - x0) / small.shape[1], (y1 - y0) / small.shape[0]
    bx0 = max(x0, x0 + int((left - 1) * fx)) & ~1
    by0 = max(y0, y0 + int((top - 1) * fy)) & ~1
    bx1 = min(width, x1, x0 + math.ceil((left + box_w + 1) * fx) + 1) & ~1
    by1 = min(height, y1, y0 + math.ceil((top + box_h + 1) * fy) + 1) & ~1
    if bx1 <= bx0 or by1 <= by0:
        return None
    if bx0 < x0 or by0 < y0:  # an odd crop corner: the even box starts one sample before the crop
        bx0, by0 = max(bx0, (x0 + 1) & ~1), max(by0, (y0 + 1) & ~1)
    return bx0, by0, bx1, by1


def _blend_into(plane: np.ndarray, face: np.ndarray, alpha: np.ndarray, weight: float) -> None:
    """plane += (face - plane) × alpha × weight, rounded to the nearest level; where alpha is 0
    the sample is kept exactly. OpenCV's float arithmetic: a third less time than numpy's with
    temporaries, and the weight comes free with the product."""
    original = plane.astype(np.float32)
    change = cv2.subtract(face, original)
    cv2.multiply(change, alpha, dst=change, scale=weight)
    plane[:] = cv2.add(change, original, dtype=cv2.CV_8U)  # a view of any strides (a turned frame)
