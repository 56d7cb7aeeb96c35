"""lipsyncd's lip-sync engine: speech audio + face video → the same video with a re-drawn mouth.

The public surface is small on purpose: :class:`LipSyncEngine` (load once, then ``load_audio`` and
``render`` per video), :class:`RenderOptions`, the result/progress records and the errors. Heavy
modules (torch, PyAV) load on first use, so the daemon can import this package cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import AudioError, Cancelled, EngineError, IncompleteInputError, ModelError, NoFaceError, VideoError
from .formats import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .options import Progress, RenderOptions, RenderResult

if TYPE_CHECKING:
    from .engine import LipSyncEngine

__all__ = [
    "AUDIO_SUFFIXES", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "AudioError", "Cancelled", "EngineError",
    "IncompleteInputError", "LipSyncEngine", "ModelError", "NoFaceError", "Progress", "RenderOptions",
    "RenderResult", "VideoError",
]


def __getattr__(name: str) -> Any:
    if name == "LipSyncEngine":
        from .engine import LipSyncEngine

        return LipSyncEngine
    raise AttributeError(name)
