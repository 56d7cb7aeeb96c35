"""What the frame loop asks of a lip-sync model: where its crop lies, the crop, the new faces.

The frame loop (:mod:`.pipeline`) is the same for every model: decode, groups of frames, frames
without a face passed through, fades, paste through our own lower-face mask, encode, progress,
stop. Only three things differ between Wav2Lip and MuseTalk, and a :class:`Redraw` answers them:

- ``rect``: where the face crop lies in the (turned) frame. Wav2Lip: the S3FD-like face box
  plus ``pads``; MuseTalk: the reference's v1.5 box from the 68-point scheme (no pads).
- ``crop``: the BGR crop the network sees. Wav2Lip: 96×96, bilinear; MuseTalk: 256×256, LANCZOS4.
- ``__call__``: crops + the *output* frame numbers they belong to (+ the first row of each face
  that the paste reads) → new BGR faces. Wav2Lip looks up each frame's mel window and draws only
  the rows read when it can, from a row planned per render (``plan``) from the faces it shows;
  MuseTalk looks up its whisper prompt and draws whole faces.

The paste (:func:`.blend.paste`) is shared: it resizes any square face to its rect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from .audio import MelWindows
from .blend import MODEL_SIZE, crop_rect, model_crop
from .faces.track import POINTS_68, FaceTrack
from .infer import LOWER_FACE_ROW, MouthGenerator, rows_from
from .yuv import I420, TurnedView, YuvMatrix

if TYPE_CHECKING:
    from .musetalk.generator import MuseTalkGenerator

Rect = tuple[int, int, int, int]
"""x0, y0, x1, y1 in pixels of the turned view, x1/y1 exclusive."""


class Redraw(Protocol):
    """One model as the frame loop runs it (see the module docstring)."""

    @property
    def batch_size(self) -> int:
        """Faces per network call (every call is padded to it)."""

    @property
    def face_size(self) -> int:
        """The side of the square face the network sees and draws."""

    def plan(self, first_rows: np.ndarray) -> None:
        """Before the frames come: the first row the paste reads (of a :attr:`face_size` face) of
        the faces this render shows, or a sample of them."""

    def rect(self, track: FaceTrack, src: int, width: int, height: int) -> Rect | None:
        """Where source frame ``src``'s face crop lies in a view of ``width`` × ``height``;
        None when the track has no face there (or no usable box)."""

    def crop(self, view: I420 | TurnedView, rect: Rect, matrix: YuvMatrix) -> np.ndarray:
        """The BGR crop the network sees."""

    def __call__(self, crops: np.ndarray, frames: list[int], first_rows: np.ndarray) -> np.ndarray:
        """New BGR faces for ``crops``, drawn to the speech of output frames ``frames``; rows
        above ``first_rows`` (per face, see :meth:`.blend.MouthMask.first_face_row`) may be left as they came."""


@dataclass
class Wav2LipRedraw:
    """Wav2Lip: 96×96 crop of the padded face box, driven by each frame's mel window."""

    generator: MouthGenerator
    mels: MelWindows
    pads: tuple[int, int, int, int]
    lower_row: int = LOWER_FACE_ROW
    """The row batches are drawn from when all their faces are read from there down (:meth:`plan`)."""
    face_size: int = MODEL_SIZE

    @property
    def batch_size(self) -> int:
        return self.generator.batch_size

    def plan(self, first_rows: np.ndarray) -> None:
        self.lower_row = rows_from(first_rows)

    def rect(self, track: FaceTrack, src: int, width: int, height: int) -> Rect | None:
        if not track.has_face[src]:
            return None
        return crop_rect(track.boxes[src], self.pads, width, height)

    def crop(self, view: I420 | TurnedView, rect: Rect, matrix: YuvMatrix) -> np.ndarray:
        return model_crop(view, rect, matrix)

    def __call__(self, crops: np.ndarray, frames: list[int], first_rows: np.ndarray) -> np.ndarray:
        return self.generator(crops, self.mels[frames], first_rows, self.lower_row)


@dataclass
class MuseTalkRedraw:
    """MuseTalk 1.5: the reference's 256×256 crop of its v1.5 face box, driven by whisper prompts."""

    generator: MuseTalkGenerator

    @property
    def batch_size(self) -> int:
        return self.generator.batch_size

    @property
    def face_size(self) -> int:
        from .musetalk.face import FACE_SIZE

        return FACE_SIZE

    def plan(self, first_rows: np.ndarray) -> None:
        """Nothing to plan: MuseTalk draws whole faces."""

    def rect(self, track: FaceTrack, src: int, width: int, height: int) -> Rect | None:
        from .musetalk.face import box_from_landmarks, with_margin

        if not track.has_face[src]:
            return None
        x0, y0, x1, y1 = with_margin(box_from_landmarks(track.points[src][POINTS_68]), height)
        # The reference does not clip a face at the frame's edge (its crop then shrinks); we clip
        # the box, so the crop and the paste stay inside the frame.
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        return (x0, y0, x1, y1) if x1 - x0 >= 2 and y1 - y0 >= 2 else None

    def crop(self, view: I420 | TurnedView, rect: Rect, matrix: YuvMatrix) -> np.ndarray:
        from .musetalk.face import FACE_SIZE

        x0, y0, x1, y1 = rect
        cx0, cy0, cx1, cy1 = x0 // 2, y0 // 2, (x1 + 1) // 2, (y1 + 1) // 2
        # The region in BGR at its own size (chroma brought up to it), then the reference's resize.
        bgr = matrix.bgr_of(view.y[y0:y1, x0:x1], view.u[cy0:cy1, cx0:cx1], view.v[cy0:cy1, cx0:cx1],
                            (x1 - x0, y1 - y0))
        return cv2.resize(bgr, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4)

    def __call__(self, crops: np.ndarray, frames: list[int], first_rows: np.ndarray) -> np.ndarray:
        return self.generator(crops, np.asarray(frames))
