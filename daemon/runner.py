"""The runner: one job at a time, highest priority then oldest, one video after another.

Deliberately plain (huey's consumer is the model): a loop that claims the next job, loads its
audio once, renders each video, writes progress into SQLite at most every
``service.progress_interval`` seconds, and hands the finished job to :mod:`results`. It reads
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
from collections.abc import Callable
from pathlib import Path

from lipsyncd.engine.errors import Cancelled, EngineError, IncompleteInputError
from lipsyncd.engine.options import Progress, RenderOptions

from . import logs
from .config import Config
from .engine_port import Engine, EngineFactory
from .results import file_job, work_paths
from .stability import InputWait
from .store import Job, Store

log = logging.getLogger(__name__)

WAITING = "Waiting: "
"""Prefix of the note on a job that cannot start yet; cleared once it can."""


class Runner:
    """Runs queued jobs; one instance, in one thread, with its own database connection."""

    def __init__(self, config: Config, engine_factory: EngineFactory, stop: threading.Event) -> None:
        self.config = config
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self.stop = stop
        self.heartbeat = time.monotonic()
        self._blocked_until: dict[int, float] = {}
        self._incomplete = InputWait(config.watch.quiet_period, config.watch.max_wait)
        self._told: set[str] = set()

    def run(self) -> None:
        store = Store(self.config.folders.database)
        try:
            while not self.stop.is_set():
                self.heartbeat = time.monotonic()
                if not self.step(store):
                    self.stop.wait(self.config.watch.poll_interval)
        finally:
            store.close()

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
            if self._blocked_until.get(job.id, 0.0) > now or self._held_for_input(store, job) \
                    or not self._ready(store, job):
                continue
            if store.claim(job.id):
                try:
                    self._run(store, job.id)
                except Exception as exc:  # a bug must fail this job, not stop the service in a loop
                    log.exception("job %d (%s): internal error", job.id, job.name)
                    self._file(store, job.id, "failed", _internal_error(exc))
                return True
        return False

    def _held_for_input(self, store: Store, job: Job) -> bool:
        """An input looked incomplete: wait until it changed and settled; fail it after max_wait."""
        verdict = self._incomplete.verdict(job.id, work_paths(Path(job.work_dir))[0])
        if verdict == "give up":
            self._file(store, job.id, "failed", self._incomplete.give_up(job.id))
        return verdict != "run"

    def _incomplete_input(self, job: Job, inputs: Path, exc: IncompleteInputError) -> tuple[str, str]:
        """Not done, not failed: back to the queue, with the reason as its note, until the file is whole."""
        log.warning("job %d (%s): %s", job.id, job.name, exc)
        self._incomplete.hold(job.id, inputs, exc)
        return "incomplete", f"{WAITING}{exc}"

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
            store.interrupt(job_id, "Interrupted by a service stop; it runs again at the next start.")
            return
        if outcome == "incomplete":
            store.interrupt(job_id, error or "")
            return
        self._file(store, job_id, outcome, error)

    def _file(self, store: Store, job_id: int, outcome: str | None, error: str | None = None) -> None:
        file_job(store, job_id, self.config.folders, self.config.watch.ignore, outcome=outcome, error=error)

    def _render_all(self, store: Store, job: Job, inputs: Path, outputs: Path) -> tuple[str | None, str | None]:
        """Render every pending video; (outcome, error) with outcome None meaning "from the tasks"."""
        assert self._engine is not None and job.audio is not None
        engine = self._engine
        options = RenderOptions.from_mapping(job.option_values)
        try:
            audio = engine.load_audio(inputs / job.audio)
        except IncompleteInputError as exc:
            return self._incomplete_input(job, inputs, exc)
        except EngineError as exc:
            message = f"The audio {job.audio} cannot be used: {exc}"
            for task in store.tasks(job.id):
                if task.state != "done":
                    store.task_finished(task.id, "failed", message)
            return "failed", message
        should_stop = self._stop_check(store, job.id)
        for task in store.tasks(job.id):
            if task.state == "done" and (outputs / task.output_name).is_file():
                continue
            if task.state == "failed":  # failed in an earlier, interrupted attempt: not retried
                continue
            if should_stop():
                break
            store.task_started(task.id)
            log.info("%s: rendering to %s", task.video, task.output_name)
            try:
                result = engine.render(audio, inputs / task.video, outputs / task.output_name, options,
                                       progress=self._progress_writer(store, task.id), should_stop=should_stop,
                                       video_digest=task.video_sha256)
            except Cancelled:
                break
            except IncompleteInputError as exc:
                return self._incomplete_input(job, inputs, exc)
            except EngineError as exc:
                store.task_finished(task.id, "failed", str(exc))
                log.warning("%s: failed: %s", task.video, exc)
            except Exception as exc:  # a bug must fail one video, not the service
                log.exception("%s: internal error", task.video)
                store.task_finished(task.id, "failed", _internal_error(exc))
            else:
                store.task_finished(task.id, "done")
                log.info("%s: done, %d frames at %.2f fps in %.1f s (face in %d frames)", task.video,
                         result.frames, result.fps, result.seconds, result.frames_with_face)
        if self.stop.is_set():
            return "interrupted", None
        if store.cancel_requested(job.id):
            for task in store.tasks(job.id):
                if task.state in ("queued", "running"):
                    store.task_finished(task.id, "cancelled")
            return "cancelled", None
        return None, None

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


def _internal_error(exc: Exception) -> str:
    return f"Internal error ({type(exc).__name__}: {exc}). Please report it, with job.log."
