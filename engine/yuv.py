"""Frames as the codec stores them (planar YUV 4:2:0), and colour conversion of small regions.

The render keeps every frame in yuv420p from the decoder to the encoder: only the face crop is
converted to BGR for the network, and only the mouth's rows go back through BGR → YUV. A full
frame is never converted, which is both the cheapest path (colour conversion of whole frames cost
more than the blend itself) and the faithful one: outside the mouth the encoder gets the
decoder's own samples, so the output there is exactly a re-encode of the source.

An :class:`I420` frame is one contiguous ``uint8`` array of shape ``(height * 3 // 2, width)``
(even sizes), the layout PyAV's ``VideoFrame.from_numpy_buffer(..., format="yuv420p")`` takes
without copying: the Y plane, then U and V at half width and height.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_KR_KB = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114), 9: (0.2627, 0.0593),
          10: (0.2627, 0.0593)}
"""FFmpeg colour-space tag → luma weights of red and blue (BT.709, BT.601, BT.2020)."""
FULL_RANGE = 2


class I420:
    """Views of the three planes of one yuv420p frame held in a single contiguous array."""

    __slots__ = ("data", "y", "u", "v")

    def __init__(self, data: np.ndarray) -> None:
        rows, width = data.shape
        height = rows * 2 // 3
        if data.dtype != np.uint8 or rows != height * 3 // 2 or height % 2 or width % 2:
            raise ValueError(f"not a yuv420p frame of even size: {data.dtype} {data.shape}")
        self.data = data
        quarter = (height // 2) * (width // 2)
        flat = data.reshape(-1)
        self.y = data[:height]
        self.u = flat[height * width:height * width + quarter].reshape(height // 2, width // 2)
        self.v = flat[height * width + quarter:].reshape(height // 2, width // 2)

    @classmethod
    def empty(cls, width: int, height: int) -> I420:
        return cls(np.empty((height * 3 // 2, width), np.uint8))

    @classmethod
    def from_planes(cls, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> I420:
        """Copy three planes (views of a decoder's buffers, rotated or cropped) into one frame."""
        frame = cls.empty(y.shape[1], y.shape[0])
        frame.y[:] = y
        frame.u[:] = u
        frame.v[:] = v
        return frame

    @property
    def width(self) -> int:
        return self.data.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]

    def turned(self, turns: int) -> TurnedView:
        """The frame as ``np.rot90(picture, turns)`` shows it: a face lying sideways in the frame
        is upright in this view (the face track's ``turns``). Views, not copies: writing into the
        view writes the frame. Even sizes keep every 2×2 luma block on one chroma sample."""
        return TurnedView(*(np.rot90(plane, turns) for plane in (self.y, self.u, self.v)))


@dataclass(frozen=True)
class TurnedView:
    """The three planes of an :class:`I420` frame turned by quarter turns (see :meth:`I420.turned`)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]


@dataclass(frozen=True)
class YuvMatrix:
    """BGR ↔ YCbCr of one colour space and range, for regions of a frame (float math, rounded)."""

    to_yuv: np.ndarray
    """3×4 affine matrix for ``cv2.transform``: BGR (0..255) → Y, U, V samples."""
    to_bgr: np.ndarray
    """Its inverse, YUV samples → BGR."""

    @classmethod
    def of(cls, space: int | None, color_range: int | None) -> YuvMatrix:
        """The matrix an FFmpeg colour-space tag names; unknown tags are BT.601, as swscale assumes."""
        kr, kb = _KR_KB.get(space or 6, _KR_KB[6])
        kg = 1.0 - kr - kb
        # Rows Y, Cb, Cr over columns B, G, R, on 0..1 values.
        rgb_to = np.array([[kb, kg, kr],
                           [0.5, -0.5 * kg / (1 - kb), -0.5 * kr / (1 - kb)],
                           [-0.5 * kb / (1 - kr), -0.5 * kg / (1 - kr), 0.5]])
        if color_range == FULL_RANGE:
            scale, offset = np.array([255.0, 255.0, 255.0]), np.array([0.0, 128.0, 128.0])
        else:
            scale, offset = np.array([219.0, 224.0, 224.0]), np.array([16.0, 128.0, 128.0])
        forward = rgb_to * scale[:, None] / 255.0
        inverse = np.linalg.inv(forward)
        return cls(np.hstack([forward, offset[:, None]]).astype(np.float32),
                   np.hstack([inverse, -inverse @ offset[:, None]]).astype(np.float32))

    def bgr_of(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A region's planes (chroma at half resolution) resized to ``size`` (w, h) → BGR uint8.

        Resizing each plane before converting equals converting then resizing (both linear), at
        a fraction of the work when the region is larger than ``size``: this is the network's crop.
        """
        planes = [cv2.resize(p, size) for p in (y, u, v)]
        return cv2.transform(cv2.merge(planes), self.to_bgr)

    def yuv_planes(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BGR (uint8 or float) → float32 Y, U, V planes at full resolution, unrounded.

        One 1-channel transform per plane: contiguous planes, and OpenCV's 1-channel path is many
        times faster than its 2- or 3-channel one (3 µs vs 50 µs for a 96×96 face)."""
        bgr = bgr.astype(np.float32, copy=False)
        y, u, v = (cv2.transform(bgr, self.to_yuv[k:k + 1]) for k in range(3))
        return y, u, v
