"""The runner: one job at a time, highest priority then oldest, its videos spread over the slots.

Deliberately plain (huey's consumer is the model): a loop that claims the next job, loads its
audio once, hands each video to an :class:`~.executor.Executor` (one slot in the service's own
process by default; worker processes per GPU, or Ray tasks, when configured), writes progress
into SQLite at most every ``service.progress_interval`` seconds, and hands the finished job to
:mod:`results`. Every durable decision stays here: a video whose worker died or got stuck runs
again (attempt counter raised) up to ``engine.max_attempts`` times, and only the attempt the
runner waits for is published from its attempt folder into the job's output. It reads
two flags and nothing else to stop: the service's ``stop`` event (SIGTERM: the job is put back
in the queue and runs again) and the job's ``cancel_requested`` column (``lipsyncd cancel``).

A job whose model is missing is not failed: it stays queued with the reason as a visible
note, logged once, and is tried again every ``service.model_retry_interval`` seconds, so
dropping the model file in later just works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lipsyncd.engine.errors import EngineError
from lipsyncd.engine.options import Progress, RenderOptions

from . import attempts, logs, slot_status
from .config import Config
from .engine_port import Engine, EngineFactory
from .executor import (
    CANCELLED,
    DONE,
    LOST,
    PROGRESS,
    EngineSpec,
    Executor,
    ExecutorLost,
    Report,
    VideoWork,
    internal_error,
)
from .executors import open_executor
from .results import file_job, work_paths
from .store import Job, Store, Task

log = logging.getLogger(__name__)

WAITING = "Waiting: "
"""Prefix of the note on a job that cannot start yet; cleared once it can."""
INTERRUPTED = "Interrupted by a service stop; it runs again at the next start."
POLL_S = 0.2
"""How long the runner waits for news from the slots between its checks of the stop and cancel flags."""
IDLE_ALERT_S = 60.0
"""Jobs queued but nothing rendering for this long is logged as an alert."""


class Runner:
    """Runs queued jobs; one instance, in one thread, with its own database connection."""

    def __init__(self, config: Config, engine_factory: EngineFactory, stop: threading.Event,
                 worker_engine: EngineSpec | None = None) -> None:
        self.config = config
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self.stop = stop
        self.heartbeat = time.monotonic()
        self._blocked_until: dict[int, float] = {}
        self._told: set[str] = set()
        self._worker_engine = worker_engine or EngineSpec.from_settings(config.engine.models_dir, config.engine.device,
                                                                        config.engine.cache_dir)
        self._executor: Executor | None = None
        self._slots_shown = float("-inf")
        self._idle_since: float | None = None
        self._idle_told = False

    def run(self) -> None:
        store = Store(self.config.folders.database)
        try:
            while not self.stop.is_set():
                self.heartbeat = time.monotonic()
                if self.step(store):
                    self._idle_since = None
                else:
                    self._alert_if_idle(store)
                    self.stop.wait(self.config.watch.poll_interval)
        finally:
            self.close()
            store.close()

    def close(self) -> None:
        """Stop the executor's workers; the slots are shown no more."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        slot_status.clear(self.config.folders.state)

    def _alert_if_idle(self, store: Store) -> None:
        """Jobs queued but every slot idle for :data:`IDLE_ALERT_S`: say so once, with why."""
        queued = store.jobs_in("queued")
        if not queued:
            self._idle_since = None
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since, self._idle_told = now, False
        elif not self._idle_told and now - self._idle_since >= IDLE_ALERT_S:
            self._idle_told = True
            reasons = sorted({job.note for job in queued if job.note})
            log.warning("ALERT: %d job(s) queued but every slot has been idle for %.0f s%s", len(queued),
                        now - self._idle_since, f": {'; '.join(reasons)}" if reasons else "")

    def step(self, store: Store) -> bool:
        """File cancelled jobs, then claim and run the first job that can start. True if it did work."""
        if self.stop.is_set():
            return False
        for job in store.jobs_in("queued"):
            if job.cancel_requested:
                log.info("job %d (%s): cancelled before it started", job.id, job.name)
                self._file(store, job.id, "cancelled")
                return True
        now = time.monotonic()
        for job in store.jobs_in("queued"):
            if self._blocked_until.get(job.id, 0.0) > now or not self._ready(store, job):
                continue
            if store.claim(job.id):
                try:
                    self._run(store, job.id)
                except Exception as exc:  # a bug must fail this job, not stop the service in a loop
                    log.exception("job %d (%s): internal error", job.id, job.name)
                    self._file(store, job.id, "failed", internal_error(exc))
                return True
        return False

    def _ready(self, store: Store, job: Job) -> bool:
        """Can the engine start this job now? If not, say why on the job and try again later."""
        try:
            options = RenderOptions.from_mapping(job.option_values)
        except ValueError as exc:  # queued by an older version whose options this one does not know
            self._file(store, job.id, "failed", f"The job's engine options are not valid any more ({exc}). "
                                                "Fix job.yaml and drop the folder into the inbox again.")
            return False
        try:
            if self._engine is None:
                self._engine = self._engine_factory()
            self._engine.check_ready(options)
        except Exception as exc:  # noqa: BLE001 - missing model, or no engine (no GPU driver): wait
            reason = f"{WAITING}{exc}"
            if reason not in self._told:
                self._told.add(reason)
                log.error("job %d (%s) cannot start: %s", job.id, job.name, exc)
            if job.note != reason:
                store.set_note(job.id, reason)
            self._blocked_until[job.id] = time.monotonic() + self.config.service.model_retry_interval
            return False
        self._blocked_until.pop(job.id, None)
        if job.note and job.note.startswith(WAITING):
            store.set_note(job.id, None)
        return True

    def _run(self, store: Store, job_id: int) -> None:
        job = store.job(job_id)
        inputs, outputs, job_log = work_paths(Path(job.work_dir))
        outputs.mkdir(exist_ok=True)
        with logs.job_log(job_log):
            log.info("job %d (%s): started (attempt %d)", job.id, job.name, job.attempt)
            outcome, error = self._render_all(store, job, inputs, outputs)
            log.info("job %d (%s): %s", job.id, job.name, error or outcome or "finished")
        if outcome == "interrupted":
            store.interrupt(job_id, error or INTERRUPTED)
            return
        self._file(store, job_id, outcome, error)

    def _file(self, store: Store, job_id: int, outcome: str | None, error: str | None = None) -> None:
        file_job(store, job_id, self.config.folders, self.config.watch.ignore, outcome=outcome, error=error)

    def _render_all(self, store: Store, job: Job, inputs: Path, outputs: Path) -> tuple[str | None, str | None]:
        """Render every pending video on the executor's slots; (outcome, error) with outcome None
        meaning "from the tasks"."""
        assert self._engine is not None and job.audio is not None
        try:
            audio = self._engine.load_audio(inputs / job.audio)
        except EngineError as exc:
            message = f"The audio {job.audio} cannot be used: {exc}"
            for task in store.tasks(job.id):
                if task.state != "done":
                    store.task_finished(task.id, "failed", message)
            return "failed", message
        try:
            executor = self._executor_for(self._engine)
            executor.recover(Path(job.work_dir))
            shared = executor.share_audio(audio, Path(job.work_dir))
            try:
                self._render_on_slots(store, job, executor, shared, inputs, outputs)
            finally:
                executor.release_audio(shared)
                self._show_slots(executor, force=True)
        except ExecutorLost as exc:
            return "interrupted", self._executor_lost(store, job, exc)
        if self.stop.is_set():
            return "interrupted", None
        if store.cancel_requested(job.id):
            for task in store.tasks(job.id):
                if task.state in ("queued", "running"):
                    store.task_finished(task.id, "cancelled")
            return "cancelled", None
        return None, None

    def _render_on_slots(self, store: Store, job: Job, executor: Executor, shared: Any, inputs: Path,
                         outputs: Path) -> None:
        """Keep every slot busy with the job's pending videos until all have ended (or the job
        stops: then every slot's video of the job is cancelled and waited for)."""
        should_stop = self._stop_check(store, job.id)
        pending = deque(t for t in store.tasks(job.id)
                        if not (t.state == "done" and (outputs / t.output_name).is_file())
                        and t.state != "failed")  # failed in an earlier, interrupted run: not retried
        running: dict[str, tuple[Task, VideoWork, Callable[[Progress], None]]] = {}
        lost: Counter[int] = Counter()
        stopping = False
        while pending or running:
            if not stopping and should_stop():
                stopping = True
                pending.clear()
                for key in running:
                    executor.cancel(key)
            while pending and not stopping and executor.free_slots():
                task = pending.popleft()
                work = self._submit(store, job, task, executor, shared, inputs)
                running[work.key] = (task, work, self._progress_writer(store, task.id))
            for report in executor.poll(POLL_S):
                if report.key not in running:
                    continue
                task, work, progress = running[report.key]
                if report.kind == PROGRESS:
                    if report.progress is not None:
                        progress(report.progress)
                    continue
                del running[report.key]
                if report.kind == LOST and not stopping and self._retry(store, task, report, lost):
                    pending.appendleft(task)
                else:
                    self._ended(store, task, work, report, outputs)
            self._show_slots(executor)

    def _submit(self, store: Store, job: Job, task: Task, executor: Executor, shared: Any,
                inputs: Path) -> VideoWork:
        store.task_started(task.id)
        attempt = store.task(task.id).attempt
        key = attempts.attempt_key(job.id, task.id, attempt)
        output = attempts.prepare(Path(job.work_dir), key, task.output_name)
        work = VideoWork(key, job.id, task.id, attempt, inputs / task.video, output, job.option_values,
                         task.video_sha256, shared)
        log.info("%s: rendering to %s%s", task.video, task.output_name, f" (attempt {attempt})" if attempt > 1 else "")
        executor.submit(work)
        return work

    def _retry(self, store: Store, task: Task, report: Report, lost: Counter[int]) -> bool:
        """A worker was lost under this video: run it again, up to ``engine.max_attempts`` times in all."""
        lost[task.id] += 1
        if lost[task.id] >= self.config.engine.max_attempts:
            return False
        log.warning("%s: %s; it runs again", task.video, report.message)
        store.task_retry(task.id, f"Running again: {report.message}.")
        return True

    def _ended(self, store: Store, task: Task, work: VideoWork, report: Report, outputs: Path) -> None:
        """Record how an attempt ended; only a finished attempt's output is published, once."""
        if report.kind == DONE and attempts.publish(work.output, outputs / task.output_name):
            store.task_finished(task.id, "done")
            result = report.result
            if result is not None:
                log.info("%s: done, %d frames at %.2f fps in %.1f s (face in %d frames)", task.video,
                         result.frames, result.fps, result.seconds, result.frames_with_face)
            return
        attempts.discard(work.output)
        if report.kind == CANCELLED or (report.kind == LOST and (self.stop.is_set() or
                                                                 store.cancel_requested(task.job_id))):
            return  # the job stops: its task is put back in the queue or cancelled with it
        if report.kind == LOST:
            message = (f"The video could not be rendered: {report.message}, {self.config.engine.max_attempts} "
                       "times in a row. It may be too large for the GPU's memory or trip a driver problem; "
                       "try a shorter or smaller video, then run lipsyncd retry for this job.")
        elif report.kind == DONE:
            message = internal_error(RuntimeError("the render finished without writing its output"))
        else:
            message = report.message or "The video could not be rendered."
        store.task_finished(task.id, "failed", message)
        log.warning("%s: failed: %s", task.video, message)

    def _executor_lost(self, store: Store, job: Job, exc: ExecutorLost) -> str:
        """Nowhere to render: the job goes back to the queue (videos already done are kept) with
        the reason as its note, and waits ``model_retry_interval`` before it is tried again."""
        log.error("job %d (%s): %s", job.id, job.name, exc)
        if self._executor is not None:
            try:
                self._executor.close()
            except Exception:  # it is already broken; a new one is opened next time
                log.debug("closing the lost executor failed", exc_info=True)
            self._executor = None
        self._blocked_until[job.id] = time.monotonic() + self.config.service.model_retry_interval
        return f"{WAITING}{exc}"

    def _executor_for(self, engine: Engine) -> Executor:
        if self._executor is None:
            self._executor = open_executor(self.config, engine, self._worker_engine)
            log.info("rendering on %d slot(s): %s", self._executor.capacity,
                     ", ".join(s.name for s in self._executor.slots()))
        return self._executor

    def _show_slots(self, executor: Executor, force: bool = False) -> None:
        """What each slot does, for ``lipsyncd status``; at most every ``progress_interval``."""
        now = time.monotonic()
        if force or now - self._slots_shown >= self.config.service.progress_interval:
            self._slots_shown = now
            slot_status.write(self.config.folders.state, executor.slots())

    def _stop_check(self, store: Store, job_id: int) -> Callable[[], bool]:
        """should_stop for the engine: the stop flag at once; the cancel flag is a database read,
        so at most once per ``progress_interval`` (should_stop is called every few frames)."""
        interval = self.config.service.progress_interval
        last = [float("-inf"), False]

        def should_stop() -> bool:
            if self.stop.is_set():
                return True
            now = time.monotonic()
            if now - last[0] >= interval:
                last[0], last[1] = now, store.cancel_requested(job_id)
            return bool(last[1])

        return should_stop

    def _progress_writer(self, store: Store, task_id: int) -> Callable[[Progress], None]:
        """Progress into SQLite, throttled; every call also counts as the loop being alive."""
        interval = self.config.service.progress_interval
        last = [float("-inf")]

        def progress(p: Progress) -> None:
            now = time.monotonic()
            self.heartbeat = now
            if now - last[0] >= interval or p.frames_done >= p.frames_total:
                last[0] = now
                store.task_progress(task_id, p.frames_done, p.frames_total)

        return progress
