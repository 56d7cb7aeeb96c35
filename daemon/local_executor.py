"""Executors on this host: the engine in the service's own thread, or one worker process per slot.

Slots come from the config (:func:`plan_slots`): ``engine.gpus`` (``all``, a list such as
``[0, 2]``, or a count), times ``engine.workers_per_gpu``; a host without a usable GPU (or with
``engine.device: cpu``) gets ``engine.cpu_workers`` CPU slots, 1 by default. A single slot on
the first GPU or the CPU is served inline, in the service's process, exactly as before slots
existed; anything more gets :class:`LocalExecutor`'s worker processes.

A worker process is watched two ways. Its report pipe ends the moment it dies, however it dies
(``kill -9``, an out-of-memory kill, a driver crash): that is noticed at the next :meth:`poll`,
well within a second. A worker alive but silent (no progress report) for ``engine.stuck_timeout``
seconds is killed: a hung driver call or a deadlock would otherwise hold its slot forever. Both
become one ``lost`` report; the runner decides whether the video runs again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lipsyncd.engine.options import Progress

from . import shared_audio
from .executor import (
    CANCELLED,
    LOST,
    PROGRESS,
    EngineSpec,
    Executor,
    Report,
    SlotBoard,
    SlotState,
    VideoWork,
)
from .worker import render_video, work_to_json

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 10.0
"""A cancelled attempt that has not stopped after this long has its worker killed."""
CLOSE_WAIT_S = 3.0


@dataclass(frozen=True)
class Slot:
    name: str
    gpu: int | None
    """The GPU index as this host numbers it; None for a CPU slot."""

    @property
    def device(self) -> str:
        return "cpu" if self.gpu is None else "cuda"


def plan_slots(gpus: str | int | tuple[int, ...], workers_per_gpu: int, cpu_workers: int, device: str,
               gpu_count: Callable[[], int]) -> list[Slot]:
    """The slots of this host. ``gpu_count`` is asked only when GPUs may be used (it imports torch)."""
    available = 0 if device == "cpu" else gpu_count()
    if isinstance(gpus, str):  # "all" (the only word the config accepts)
        indices = list(range(available))
    elif isinstance(gpus, int):
        if gpus > available:
            log.warning("engine.gpus asks for %d GPUs but %d are usable; using %d", gpus, available, available)
        indices = list(range(min(gpus, available)))
    else:
        missing = [g for g in gpus if g >= available]
        if missing:
            log.warning("engine.gpus names GPU %s, which this host does not have (it has %d); skipped",
                        ", ".join(map(str, missing)), available)
        indices = [g for g in gpus if g < available]
    if not indices:
        return [Slot(f"cpu{n}", None) for n in range(cpu_workers)]
    if workers_per_gpu == 1:
        return [Slot(f"gpu{g}", g) for g in indices]
    return [Slot(f"gpu{g}.{n}", g) for g in indices for n in range(workers_per_gpu)]


def cuda_device_count() -> int:
    """GPUs torch can use here. A host without the NVIDIA driver is answered without importing
    torch (seconds), so a CPU-only service starts its first job at once."""
    if not Path("/proc/driver/nvidia/gpus").is_dir():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class InlineExecutor(Executor):
    """One slot: the service's own engine renders in a thread of the service (no new process).

    The render runs beside the runner's loop rather than inside it so that this executor keeps
    the same contract as the others; the runner waits for it to end before it returns."""

    def __init__(self, engine: Any, slot: str = "cpu0") -> None:
        self._engine = engine
        self._slot = slot
        self._board = SlotBoard([(slot, socket.gethostname())])
        self._reports: queue.Queue[Report] = queue.Queue()
        self._running: str | None = None
        self._cancelled: set[str] = set()

    @property
    def capacity(self) -> int:
        return 1

    def free_slots(self) -> int:
        return 0 if self._running else 1

    def share_audio(self, audio: Any, work_dir: Path) -> Any:
        return audio

    def submit(self, work: VideoWork) -> None:
        self._running = work.key
        self._board.start(self._slot, work)

        def progress(p: Progress) -> None:  # every frame, as before slots: speed and ETA are measured on each
            self._reports.put(Report(work.key, PROGRESS, progress=p))

        def render() -> None:
            def stop() -> bool:
                return work.key in self._cancelled

            self._reports.put(render_video(self._engine, work, work.audio, progress, stop))

        threading.Thread(target=render, name=f"render {work.name}", daemon=True).start()

    def poll(self, timeout: float) -> list[Report]:
        reports = _drain(self._reports, timeout)
        for report in reports:
            if report.kind == PROGRESS and report.progress:
                self._board.progress(self._slot, report.progress)
            elif report.key == self._running:
                self._running = None
                self._board.clear(self._slot)
        return reports

    def cancel(self, key: str) -> None:
        self._cancelled.add(key)

    def slots(self) -> list[SlotState]:
        return self._board.states()


class _Process:
    """One slot's worker process and the attempt it renders."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.proc: subprocess.Popen[str] | None = None
        self.work: VideoWork | None = None
        self.heard = 0.0
        self.cancelled_at: float | None = None


class LocalExecutor(Executor):
    """One worker process per slot on this host, started at once and kept between videos and jobs
    (each loads the model once). ``CUDA_VISIBLE_DEVICES`` pins a GPU slot's process to its GPU; a
    CPU slot's torch gets an equal share of the cores."""

    def __init__(self, slots: list[Slot], spec: EngineSpec, audio_dir: Path, stuck_timeout: float,
                 cancel_grace: float = CANCEL_GRACE_S) -> None:
        self._spec = spec
        self._audio_dir = audio_dir
        self._stuck_timeout = stuck_timeout
        self._cancel_grace = cancel_grace
        self._workers = [_Process(slot) for slot in slots]
        self._board = SlotBoard([(slot.name, socket.gethostname()) for slot in slots])
        self._messages: queue.Queue[tuple[subprocess.Popen[str], dict[str, Any] | None]] = queue.Queue()
        cpu_slots = sum(slot.gpu is None for slot in slots)
        self._threads = str(max(1, (os.cpu_count() or 1) // max(1, cpu_slots)))
        for worker in self._workers:
            self._start(worker)

    @property
    def capacity(self) -> int:
        return len(self._workers)

    def free_slots(self) -> int:
        return sum(w.work is None for w in self._workers)

    def share_audio(self, audio: Any, work_dir: Path) -> Any:
        """Saved on the service's local disk: every worker of this host reads it from there."""
        self._audio_dir.mkdir(parents=True, exist_ok=True)
        return str(shared_audio.save(audio, self._audio_dir / f"{work_dir.name}.npz"))

    def release_audio(self, handle: Any) -> None:
        Path(handle).unlink(missing_ok=True)

    def submit(self, work: VideoWork) -> None:
        worker = next(w for w in self._workers if w.work is None)
        if worker.proc is None:
            self._start(worker)
        worker.work, worker.heard, worker.cancelled_at = work, time.monotonic(), None
        self._board.start(worker.slot.name, work)
        self._send(worker, {"op": "render", "work": work_to_json(work)})

    def poll(self, timeout: float) -> list[Report]:
        reports = []
        for proc, message in _drain(self._messages, timeout):
            worker = next((w for w in self._workers if w.proc is proc), None)
            if worker is not None:
                reports += self._heard(worker, message)
        reports += self._watch()
        return reports

    def cancel(self, key: str) -> None:
        for worker in self._workers:
            if worker.work is not None and worker.work.key == key and worker.cancelled_at is None:
                worker.cancelled_at = time.monotonic()
                self._send(worker, {"op": "cancel", "key": key})

    def slots(self) -> list[SlotState]:
        return self._board.states()

    def close(self) -> None:
        """Closing a worker's stdin tells it to leave; one that does not within a few seconds is killed."""
        for worker in self._workers:
            if worker.proc is not None and worker.proc.stdin is not None:
                worker.proc.stdin.close()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for worker in self._workers:
            if worker.proc is not None:
                try:
                    worker.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._kill(worker)
            worker.proc = None

    # -- the workers ----------------------------------------------------------------------

    def _start(self, worker: _Process) -> None:
        env = dict(os.environ)
        if worker.slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(worker.slot.gpu)
        else:
            env.setdefault("OMP_NUM_THREADS", self._threads)
        spec = json.dumps(asdict(self._spec.on_device(worker.slot.device)))
        proc = subprocess.Popen([sys.executable, "-m", "lipsyncd.daemon.worker", spec, worker.slot.name],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        worker.proc = proc
        threading.Thread(target=self._listen, args=(proc,), name=f"worker {worker.slot.name}", daemon=True).start()
        log.info("slot %s: worker process %d started", worker.slot.name, proc.pid)

    def _listen(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self._messages.put((proc, json.loads(line)))
            except ValueError:
                log.warning("worker %d said something unexpected: %.200s", proc.pid, line)
        self._messages.put((proc, None))

    def _send(self, worker: _Process, order: dict[str, Any]) -> None:
        """A worker that died meanwhile cannot be written to; its end is reported by :meth:`poll`."""
        try:
            assert worker.proc is not None and worker.proc.stdin is not None
            worker.proc.stdin.write(json.dumps(order) + "\n")
            worker.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def _heard(self, worker: _Process, message: dict[str, Any] | None) -> list[Report]:
        if message is None:  # the process ended
            assert worker.proc is not None
            code = worker.proc.wait()
            worker.proc = None
            log.warning("slot %s: worker process ended (%s)", worker.slot.name, _exit_words(code))
            return self._finish(worker, LOST, f"its worker process on {worker.slot.name} ended unexpectedly "
                                              f"({_exit_words(code)})")
        report = Report.from_json(message)
        if worker.work is None or report.key != worker.work.key:
            return []  # a late report of an attempt already given up
        worker.heard = time.monotonic()
        if report.kind == PROGRESS:
            if report.progress:
                self._board.progress(worker.slot.name, report.progress)
            return [report]
        worker.work = None
        self._board.clear(worker.slot.name)
        return [report]

    def _watch(self) -> list[Report]:
        """Kill workers that ignore a cancel, or that stopped reporting progress."""
        reports, now = [], time.monotonic()
        for worker in self._workers:
            if worker.work is None:
                continue
            if worker.cancelled_at is not None and now - worker.cancelled_at > self._cancel_grace:
                log.warning("slot %s: %s did not stop when cancelled; its worker is killed", worker.slot.name,
                            worker.work.name)
                self._kill(worker)
                reports += self._finish(worker, CANCELLED, None)
            elif worker.cancelled_at is None and now - worker.heard > self._stuck_timeout:
                log.warning("slot %s: no progress on %s for %.0f s; its worker is killed", worker.slot.name,
                            worker.work.name, now - worker.heard)
                self._kill(worker)
                reports += self._finish(worker, LOST, f"its worker made no progress for {self._stuck_timeout:.0f} "
                                                      "seconds and was stopped")
        return reports

    def _finish(self, worker: _Process, kind: str, message: str | None) -> list[Report]:
        work, worker.work = worker.work, None
        self._board.clear(worker.slot.name)
        return [Report(work.key, kind, message=message)] if work is not None else []

    def _kill(self, worker: _Process) -> None:
        if worker.proc is not None:
            worker.proc.kill()
            worker.proc.wait()
            worker.proc = None  # its pipe's end, still to come, is then nobody's


def _drain(source: queue.Queue, timeout: float) -> list:
    """Everything queued, waiting up to ``timeout`` for the first item."""
    try:
        items = [source.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items


def _exit_words(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = ": out of memory, or stopped by hand" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"
