"""Rendering one video attempt, and the worker process that does it for :class:`LocalExecutor`.

:func:`render_video` is the one place that calls ``engine.render`` for the daemon, whatever the
executor: in the service's own thread (inline), in a worker process (local) or in a Ray task.
It turns every way a render ends into a :class:`Report`.

``python -m lipsyncd.daemon.worker SPEC SLOT`` is a long-lived worker for one slot. The service
starts it with the slot's ``CUDA_VISIBLE_DEVICES`` (so torch there only ever sees its own GPU),
sends it JSON lines on stdin (``render``, ``cancel``) and reads JSON reports from its stdout.
Anything a library prints goes to stderr (the journal), never into the report stream. When the
service goes away, however it goes (even ``kill -9``), the worker's stdin ends and it exits at
once, so no orphan keeps a GPU busy.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from lipsyncd.engine.errors import Cancelled, EngineError, IncompleteInputError
from lipsyncd.engine.options import Progress, RenderOptions

from . import shared_audio
from .executor import (
    CANCELLED,
    DONE,
    FAILED,
    PROGRESS,
    EngineSpec,
    Report,
    VideoWork,
    internal_error,
)
from .names import readable

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
"""A worker reports progress at most this often (plus the last frame); each report is also its heartbeat."""


def render_video(engine: Any, work: VideoWork, audio: Any, progress: Callable[[Progress], None],
                 should_stop: Callable[[], bool]) -> Report:
    """Render one attempt into ``work.output``; the report says how it ended (never raises)."""
    try:
        result = engine.render(audio, work.video, work.output, RenderOptions.from_mapping(work.options),
                               progress=progress, should_stop=should_stop, video_digest=work.video_digest)
    except Cancelled:
        return Report(work.key, CANCELLED)
    except EngineError as exc:  # the message as the user reads it; the type and detail for the runner's policy
        detail = exc.detail if isinstance(exc, IncompleteInputError) else None
        return Report(work.key, FAILED, message=readable(str(exc)), error_type=type(exc).__name__, detail=detail)
    except Exception as exc:
        log.exception("%s: internal error", work.name)
        return Report(work.key, FAILED, message=internal_error(exc))
    return Report(work.key, DONE, result=result)


def throttled(send: Callable[[Report], None], key: str) -> Callable[[Progress], None]:
    """A progress callback that sends at most every :data:`PROGRESS_EVERY_S`, and the last frame."""
    last = [float("-inf")]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or p.frames_done >= p.frames_total:
            last[0] = now
            send(Report(key, PROGRESS, progress=p))

    return progress


def work_to_json(work: VideoWork) -> dict[str, Any]:
    return {"key": work.key, "job_id": work.job_id, "task_id": work.task_id, "attempt": work.attempt,
            "video": str(work.video), "output": str(work.output), "options": work.options,
            "video_digest": work.video_digest, "audio": str(work.audio)}


def work_from_json(data: dict[str, Any]) -> VideoWork:
    return VideoWork(data["key"], data["job_id"], data["task_id"], data["attempt"], Path(data["video"]),
                     Path(data["output"]), data["options"], data["video_digest"], data["audio"])


class _Worker:
    """The worker process's state: its engine, the attempt it renders, and its cancel flag."""

    def __init__(self, engine: Any, out: TextIO, broken: str | None = None) -> None:
        self.engine = engine
        self.broken = broken
        """Why the engine could not be built (no usable GPU...): every video fails with it."""
        self.out = out
        self.lock = threading.Lock()
        self.inbox: queue.Queue[VideoWork] = queue.Queue()
        self.current: str | None = None
        self.cancelled: set[str] = set()
        self._audio: tuple[str, Any] | None = None

    def send(self, report: Report) -> None:
        with self.lock:
            self.out.write(json.dumps(report.to_json()) + "\n")
            self.out.flush()

    def read_commands(self, commands: TextIO) -> None:
        """stdin: render and cancel orders; its end means the service is gone: leave now."""
        for line in commands:
            order = json.loads(line)
            if order["op"] == "render":
                self.inbox.put(work_from_json(order["work"]))
            elif order["op"] == "cancel":
                self.cancelled.add(order["key"])
        os._exit(0)

    def audio(self, handle: str) -> Any:
        """The job's shared audio, read once per job (the last one is kept)."""
        if self._audio is None or self._audio[0] != handle:
            self._audio = (handle, shared_audio.load(Path(handle)))
        return self._audio[1]

    def serve(self) -> None:
        while True:
            work = self.inbox.get()
            if work.key in self.cancelled:
                self.send(Report(work.key, CANCELLED))
                continue
            if self.broken is not None:
                self.send(Report(work.key, FAILED, message=self.broken))
                continue
            try:
                audio = self.audio(work.audio)
            except (OSError, ValueError, KeyError) as exc:
                self.send(Report(work.key, FAILED, message=internal_error(exc)))
                continue
            self.send(render_video(self.engine, work, audio, throttled(self.send, work.key),
                                   self.stop_check(work.key)))

    def stop_check(self, key: str) -> Callable[[], bool]:
        """should_stop for one attempt: has the service cancelled it?"""
        return lambda: key in self.cancelled


def main(argv: list[str]) -> int:
    # Workers follow the service: Ctrl-C in a terminal, or systemd's SIGTERM to the whole unit,
    # must not kill them mid-frame before the service has put the job back. They leave when the
    # service closes their stdin, or dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spec = EngineSpec(**json.loads(argv[1]))
    slot = argv[2] if len(argv) > 2 else "worker"
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the reports
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"%(levelname)s [{slot}] %(message)s")
    try:
        worker = _Worker(spec.build(), out)
    except EngineError as exc:  # a plain reason for the user (no GPU usable on this slot...), not a crash loop
        log.error("cannot start the engine: %s", exc)
        worker = _Worker(None, out, broken=str(exc))
    threading.Thread(target=worker.read_commands, args=(sys.stdin,), name="commands", daemon=True).start()
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
