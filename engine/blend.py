"""Where the network looks and where its output goes back: crop geometry and feathered paste-back.

Wav2Lip re-draws the whole 96×96 face crop, but only its lower half carries the new mouth; the
rest is a blurrier copy of the input. Pasting the square back (as the reference does) leaves a
visible box and softens the eyes. We paste through a mask that covers the lower face only
(jaw, chin, lips, from the nose down), feathered so no edge shows, and weighted by the track's
fade so a face that appears or disappears does not pop. Everything outside that mask is the
original frame, bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np

from .faces.track import LIPS, NOSE, OVAL

MODEL_SIZE = 96


def crop_rect(box: np.ndarray, pads: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The reference's crop: the face box grown by pads (top, bottom, left, right), clipped to the frame."""
    top, bottom, left, right = pads
    x0 = int(max(0, round(box[0]) - left))
    y0 = int(max(0, round(box[1]) - top))
    x1 = int(min(width, round(box[2]) + right))
    y1 = int(min(height, round(box[3]) + bottom))
    return x0, y0, x1, y1


def model_crop(frame: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The 96×96 BGR crop the network sees (cv2.resize defaults, as in training)."""
    x0, y0, x1, y1 = rect
    return cv2.resize(frame[y0:y1, x0:x1], (MODEL_SIZE, MODEL_SIZE))


def lower_face_mask(points: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """Float32 mask (crop height × width) in 0..1: the lower face below the nose, feathered inwards.

    The polygon is the convex hull of the face-oval points below the nose, the lips and the nose
    base; it is shrunk by the feather radius before blurring, so the mask reaches zero inside the
    jaw line and never touches the crop's border (nothing outside the crop can change).
    """
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
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


def paste(frame: np.ndarray, generated: np.ndarray, rect: tuple[int, int, int, int],
          points: np.ndarray, weight: float) -> None:
    """Blend the network's 96×96 BGR output into ``frame`` (in place) through the lower-face mask."""
    x0, y0, x1, y1 = rect
    region = frame[y0:y1, x0:x1]
    face = cv2.resize(generated, (x1 - x0, y1 - y0)).astype(np.float32)
    alpha = (lower_face_mask(points, rect) * weight)[..., None]
    blended = region.astype(np.float32) * (1.0 - alpha) + face * alpha
    region[:] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
