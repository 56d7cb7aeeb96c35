"""The contract between the runner and whatever renders its videos: one or many slots, here or on Ray.

The runner keeps the job-level loop and every durable decision (SQLite, retries, publishing);
an executor only places videos on slots and reports back. One contract, three implementations:

- :class:`~.local_executor.InlineExecutor`: one slot, the engine in the service's own process
  (the default on a CPU-only host: nothing changes for existing users);
- :class:`~.local_executor.LocalExecutor`: one worker process per GPU (or CPU) slot on this host;
- :class:`~.ray_executor.RayExecutor`: one Ray task per video, on any host of a Ray cluster.

Every video attempt gets its own key and its own work folder (see :mod:`.attempts`): an executor's
worker writes only there, and only the runner moves a finished output into the job's
``output/`` folder, once. So a duplicate or late attempt can never clobber or double-file a
result, and an executor can be as simple-minded about retries as Ray is told to be (not at all):
a lost worker is *reported* (:data:`LOST`) and the runner's policy decides what happens next.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lipsyncd.engine.options import Progress, RenderResult

from . import attempts
from .names import readable

PROGRESS, DONE, FAILED, CANCELLED, LOST = "progress", "done", "failed", "cancelled", "lost"
"""Kinds of :class:`Report`. ``failed`` is the video's own fault (the message is for the user, as
the engine wrote it); ``lost`` is the worker's (it died, or stopped making progress)."""


class ExecutorLost(RuntimeError):
    """The executor itself cannot be used (the Ray cluster cannot be reached): the job is not at
    fault; it waits in the queue and is tried again later. The message says what to check."""


@dataclass(frozen=True)
class EngineSpec:
    """How a worker process builds its engine: an importable ``module:callable`` and its keyword
    arguments (JSON-able, so the spec crosses process and host boundaries)."""

    factory: str = "lipsyncd.daemon.engine_port:open_engine"
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, models_dir: Path, device: str, cache_dir: Path | None) -> EngineSpec:
        return cls(kwargs={"models_dir": str(models_dir), "device": device,
                           "cache_dir": str(cache_dir) if cache_dir else None})

    def on_device(self, device: str) -> EngineSpec:
        """The same engine pinned to ``device`` (a GPU slot renders on ``cuda``, a CPU slot on ``cpu``)."""
        return replace(self, kwargs={**self.kwargs, "device": device}) if "device" in self.kwargs else self

    def build(self) -> Any:
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(**self.kwargs)


@dataclass(frozen=True)
class VideoWork:
    """One attempt at one video of a job."""

    key: str
    """Unique per attempt (``job-3.task-7.a2``); every report names it."""
    job_id: int
    task_id: int
    attempt: int
    video: Path
    output: Path
    """Inside the attempt's own folder; the runner publishes it from there."""
    options: dict[str, Any]
    video_digest: str | None
    audio: Any
    """What :meth:`Executor.share_audio` returned for this job."""

    @property
    def name(self) -> str:
        return self.video.name


@dataclass(frozen=True)
class Report:
    """Something an executor has to say about an attempt."""

    key: str
    kind: str
    progress: Progress | None = None
    result: RenderResult | None = None
    message: str | None = None
    error_type: str | None = None
    """For ``failed``: the engine error's class name (``NoFaceError``...), for policies that differ by cause."""
    detail: str | None = None
    """For a failed ``IncompleteInputError``: what is wrong with the file, so the runner can wait for it."""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "message": self.message, "error_type": self.error_type,
                "detail": self.detail,
                "progress": asdict(self.progress) if self.progress else None,
                "result": asdict(self.result) if self.result else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        progress, result = data.get("progress"), data.get("result")
        return cls(data["key"], data["kind"], Progress(**progress) if progress else None,
                   RenderResult(**result) if result else None, data.get("message"), data.get("error_type"),
                   data.get("detail"))


@dataclass(frozen=True)
class SlotState:
    """One slot as ``lipsyncd status`` shows it."""

    name: str
    """``gpu0``, ``gpu1.2`` (second worker on GPU 1), ``cpu0``, or a Ray node's address."""
    host: str
    job_id: int | None = None
    video: str | None = None
    frames_done: int | None = None
    frames_total: int | None = None
    fps: float | None = None

    @property
    def busy(self) -> bool:
        return self.video is not None


class SlotBoard:
    """What each slot is doing, with its rendering speed, kept by an executor for :meth:`Executor.slots`."""

    def __init__(self, slots: list[tuple[str, str]]) -> None:
        self._idle = {name: SlotState(name, host) for name, host in slots}
        self._states = dict(self._idle)
        self._first: dict[str, tuple[float, int]] = {}

    def add(self, slot: str, host: str) -> None:
        """A new slot (a Ray cluster grew)."""
        self._idle[slot] = self._states[slot] = SlotState(slot, host)

    def host(self, slot: str, host: str) -> None:
        """Where a busy slot's video actually runs (known only once a Ray task reports)."""
        self._states[slot] = replace(self._states[slot], host=host)

    def start(self, slot: str, work: VideoWork) -> None:
        self._states[slot] = replace(self._idle[slot], job_id=work.job_id, video=work.name)
        self._first.pop(slot, None)

    def progress(self, slot: str, p: Progress) -> None:
        """Frames per second since the first progress report of this video."""
        now = time.monotonic()
        since, frames = self._first.setdefault(slot, (now, p.frames_done))
        fps = (p.frames_done - frames) / (now - since) if now > since else None
        self._states[slot] = replace(self._states[slot], frames_done=p.frames_done, frames_total=p.frames_total,
                                     fps=fps)

    def clear(self, slot: str) -> None:
        self._states[slot] = self._idle[slot]

    def states(self) -> list[SlotState]:
        return list(self._states.values())


class Executor(ABC):
    """Places video attempts on slots. Used by the runner's thread only (not thread-safe)."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """How many videos can render at once."""

    @abstractmethod
    def free_slots(self) -> int:
        """How many more attempts :meth:`submit` takes right now."""

    @abstractmethod
    def share_audio(self, audio: Any, work_dir: Path) -> Any:
        """Make a job's decoded audio (mel computed once) available to every slot; the returned
        handle goes into each :class:`VideoWork` of the job."""

    def recover(self, work_dir: Path) -> None:
        """Before a job (re)starts: drop what attempts of an earlier run left. Their workers are
        gone (local workers die with the service, Ray drops the tasks of a dead driver), so the
        orphans are their attempt folders, never published; the job's videos that are not done
        are simply submitted again."""
        attempts.recover(work_dir)

    def release_audio(self, handle: Any) -> None:  # noqa: B027 - a hook: most executors have nothing to free
        """The job is over; free what :meth:`share_audio` made."""

    @abstractmethod
    def submit(self, work: VideoWork) -> None:
        """Start rendering on a free slot; returns at once."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Report]:
        """Reports since the last call, waiting up to ``timeout`` seconds for the first one. Also
        where dead and stuck workers are noticed (each becomes one :data:`LOST` report)."""

    @abstractmethod
    def cancel(self, key: str) -> None:
        """Stop an attempt; a :data:`CANCELLED` (or other final) report follows."""

    @abstractmethod
    def slots(self) -> list[SlotState]:
        """Every slot, busy or idle."""

    def close(self) -> None:  # noqa: B027 - a hook: the inline executor has no worker to stop
        """Stop every worker (the service is stopping)."""


def internal_error(exc: BaseException) -> str:
    """The message for a bug: it fails one video or job, never the service."""
    return f"Internal error ({type(exc).__name__}: {readable(str(exc))}). Please report it, with job.log."
