"""Quarter turns of a frame and of points on it: for faces lying sideways or upside down.

A phone clip that plays sideways shows its face turned by 90°; the detector only knows upright
faces, and Wav2Lip only draws upright mouths. ``np.rot90(frame, turns)`` turns a frame
counter-clockwise on screen by ``turns`` quarter turns (a view, no copy); the functions here map
continuous pixel coordinates (x right, y down) between a frame and its turned view.
"""

from __future__ import annotations

import numpy as np


def turn_points(points: np.ndarray, turns: int, width: int, height: int) -> np.ndarray:
    """(..., 2) points on a ``width`` × ``height`` frame → the same points on ``np.rot90(frame, turns)``."""
    x, y = points[..., 0], points[..., 1]
    turns %= 4
    if turns == 1:
        x, y = y, width - x
    elif turns == 2:
        x, y = width - x, height - y
    elif turns == 3:
        x, y = height - y, x
    return np.stack([x, y], axis=-1).astype(points.dtype, copy=False)


def unturn_points(points: np.ndarray, turns: int, width: int, height: int) -> np.ndarray:
    """The inverse of :func:`turn_points`: points on ``np.rot90(frame, turns)`` of a ``width`` ×
    ``height`` frame → the same points on the frame itself."""
    turned_w, turned_h = (height, width) if turns % 2 else (width, height)
    return turn_points(points, -turns, turned_w, turned_h)


def upright_turns(roll: float | np.ndarray) -> np.ndarray:
    """Quarter turns (0..3) that bring faces of roll ``roll`` (radians, see :func:`.mesh.roll`)
    closest to upright in ``np.rot90(frame, turns)``."""
    return np.round(np.asarray(roll) / (np.pi / 2)).astype(np.int64) % 4
