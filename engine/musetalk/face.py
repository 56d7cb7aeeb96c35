"""MuseTalk's face geometry: the face box, the 256x256 crop, the VAE's input, where faces go back.

Everything here is the reference's v1.5 arithmetic, integer for integer: the box from 68 face
landmarks, the 10-pixel chin margin, the LANCZOS4 resize to 256x256 (BGR, as OpenCV reads
frames), the VAE input (RGB in [-1, 1], lower half set to -1 for the masked copy) and the paste
geometry (the face resized back to its box, inside a square 1.5 times the box's larger side).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

FACE_SIZE = 256
EXTRA_MARGIN = 10
"""v1.5 extends the face box this many pixels down, to include the chin."""
PASTE_EXPAND = 1.5

MESH_TO_68 = (162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
              71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
              168, 197, 5, 4, 75, 97, 2, 326, 305,
              33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
              61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87)
"""For each of the 68 points of the reference's landmark scheme, the 468-point face mesh point
that stands for it (from the conformance fixture)."""

Box = tuple[int, int, int, int]
"""(x1, y1, x2, y2) in pixels, x2/y2 exclusive."""


def box_from_landmarks(points68: np.ndarray) -> Box:
    """The reference's face box (bbox_shift 0): x from the landmarks' extent, y2 the lowest
    landmark, y1 as far above the nose (point 29) as y2 is below it. Points are truncated to
    integers first, as the reference's int32 landmarks are."""
    pts = np.asarray(points68, dtype=np.float64).astype(np.int32)
    x1, x2 = int(pts[:, 0].min()), int(pts[:, 0].max())
    y2 = int(pts[:, 1].max())
    nose = int(pts[29, 1])
    y1 = max(0, nose - (y2 - nose))
    return x1, y1, x2, y2


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """The 68 reference points from a (468, 2+) face mesh in pixels."""
    return np.asarray(mesh)[list(MESH_TO_68), :2]


def with_margin(box: Box, frame_height: int) -> Box:
    """v1.5's box: the chin margin added, clipped to the frame."""
    x1, y1, x2, y2 = box
    return x1, y1, x2, min(y2 + EXTRA_MARGIN, frame_height)


def crop_face(frame_bgr: np.ndarray, box: Box) -> np.ndarray:
    """The 256x256 BGR face the networks see, from a frame and its (margin-extended) box."""
    x1, y1, x2, y2 = box
    return cv2.resize(frame_bgr[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4)


def vae_input(faces_bgr: np.ndarray, masked: bool) -> torch.Tensor:
    """(B, 3, 256, 256) float32 VAE input from (B, 256, 256, 3) BGR uint8 faces: RGB, scaled to
    [-1, 1]; ``masked`` sets the lower half (rows 128-255) to -1, the part MuseTalk redraws."""
    rgb = np.ascontiguousarray(np.asarray(faces_bgr)[..., ::-1]).astype(np.float32) / np.float32(255.0)
    if masked:
        rgb[:, FACE_SIZE // 2:] = 0.0
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    return (x - 0.5) / 0.5


@dataclass(frozen=True)
class PasteGeometry:
    """Where a generated 256x256 face goes back into its frame (the reference's integers)."""

    box: Box
    """The margin-extended face box; the face is resized to its size."""
    crop_box: Box
    """The square around it that the reference blends in (may leave the frame)."""
    s: int
    """Half the side of ``crop_box``."""

    @property
    def face_size(self) -> tuple[int, int]:
        """(width, height) the face is resized to."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    @property
    def offset(self) -> tuple[int, int]:
        """Top-left of the face inside ``crop_box``."""
        return self.box[0] - self.crop_box[0], self.box[1] - self.crop_box[1]

    @property
    def mask_top(self) -> int:
        """Rows of ``crop_box`` above this are never changed (``int(side * 0.5)``)."""
        return int((self.crop_box[3] - self.crop_box[1]) * 0.5)

    @property
    def blur_kernel(self) -> int:
        """The reference's Gaussian kernel size for the paste mask."""
        return int(0.05 * (self.crop_box[2] - self.crop_box[0]) // 2 * 2) + 1


def paste_geometry(box: Box) -> PasteGeometry:
    """The reference's ``get_crop_box(box, 1.5)`` and paste offsets for a margin-extended box."""
    x1, y1, x2, y2 = box
    xc, yc = (x1 + x2) // 2, (y1 + y2) // 2
    s = int(max(x2 - x1, y2 - y1) // 2 * PASTE_EXPAND)
    return PasteGeometry(box=box, crop_box=(xc - s, yc - s, xc + s, yc + s), s=s)


def resize_to_box(face_bgr: np.ndarray, box: Box) -> np.ndarray:
    """A generated face resized to its box, as the reference does (OpenCV's bilinear default)."""
    x1, y1, x2, y2 = box
    return cv2.resize(face_bgr, (x2 - x1, y2 - y1))
