"""Errors the engine raises: each carries a message a non-programmer can act on.

The daemon writes ``str(error)`` into ``error.txt`` as it is, so messages say what failed,
why, and what to do — never a traceback or a tensor shape alone.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: a render could not be done, for a reason worth telling the user."""


class AudioError(EngineError):
    """The audio cannot be used: undecodable, empty, silent or too short."""


class VideoError(EngineError):
    """The video or still image cannot be decoded or encoded."""


class NoFaceError(EngineError):
    """No face was found anywhere in the video."""


class ModelError(EngineError):
    """A model file is missing, corrupt, or does not match the expected layout."""


class Cancelled(EngineError):
    """The caller asked the render to stop (service shutdown or job cancel)."""


def reason(error: BaseException) -> str:
    """The cause of an FFmpeg or OS error without the file path it carries.

    The path is the service's internal working copy (``inbox/.processing/job-7/...``), which
    means nothing to the person reading ``error.txt``; the message already names the file.
    """
    return getattr(error, "strerror", None) or str(error)


class IncompleteInputError(EngineError):
    """An input is shorter than it says it is, or ends in the zeros of a preallocated file: most
    likely it is still being copied. The daemon keeps the job queued and tries again once the
    file has changed and held still, instead of filing it as failed (or, worse, as done)."""

    def __init__(self, name: str, detail: str) -> None:
        self.name, self.detail = name, detail
        super().__init__(f"The file '{name}' looks incomplete (still being copied?): {detail}. "
                         "The job is tried again by itself once the file is complete.")
