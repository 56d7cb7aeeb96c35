"""The engine as the daemon sees it: a small protocol, so the runner never imports torch.

The real implementation is :class:`lipsyncd.engine.LipSyncEngine`; tests pass a fake with the
same methods. :func:`open_engine` is the one place that imports the real one, lazily,
because loading torch takes seconds and the CLI's ``status`` or ``cancel`` never needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from lipsyncd.engine.options import Progress, RenderOptions, RenderResult


class Engine(Protocol):
    def check_ready(self, options: RenderOptions) -> None:
        """Raise ``ModelError`` when the model these options need is missing or corrupt."""

    def load_audio(self, path: Path, options: RenderOptions | None = None) -> Any:
        """Decode a job's audio once, with the features the job's model needs (raises
        ``AudioError``); the result is passed to ``render`` for every video of the job."""

    def audio_head(self, audio: Any, seconds: float) -> Any:
        """The first ``seconds`` of a loaded audio (all of it when shorter), for a preview clip."""

    def render(self, audio: Any, video: Path, output: Path, options: RenderOptions,
               progress: Callable[[Progress], None] | None = None,
               should_stop: Callable[[], bool] | None = None, video_digest: str | None = None) -> RenderResult:
        """Write ``output`` atomically; raise an ``EngineError`` subclass with a readable message,
        ``Cancelled`` soon after ``should_stop()`` turns true. ``video_digest`` is the video's
        sha256 when the caller already has it (saves reading a large file from the share twice)."""


    def preview(self, audio: Any, video: Path, image: Path, options: RenderOptions,
                progress: Callable[[Progress], None] | None = None,
                should_stop: Callable[[], bool] | None = None, video_digest: str | None = None) -> Any:
        """Write a preview picture of the render to ``image``; return its figures (an object with
        ``summary`` and ``as_dict()``: :class:`lipsyncd.engine.preview.Preview`)."""


EngineFactory = Callable[[], Engine]


def open_engine(models_dir: Path, device: str, cache_dir: Path | None) -> Engine:
    """Construct the real engine (heavy: imports torch)."""
    from lipsyncd.engine import LipSyncEngine

    return LipSyncEngine(models_dir, device=device, cache_dir=cache_dir)
