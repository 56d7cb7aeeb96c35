"""The runner: one job at a time, highest priority then oldest, its videos spread over the slots.

Deliberately plain (huey's consumer is the model): a loop that claims the next job, loads its
audio once, hands each video to an :class:`~.executor.Executor` (one slot in the service's own
process by default; worker processes per GPU, or Ray tasks, when configured), writes progress
into SQLite at most every ``service.progress_interval`` seconds, and hands the finished job to
:mod:`filing`. Every durable decision stays here: a video whose worker died or got stuck runs
again (attempt counter raised) up to ``engine.max_attempts`` times, and only the attempt the
runner waits for is published from its attempt folder into the job's output. It reads
two flags and nothing else to stop: the service's ``stop`` event (SIGTERM: the job is put back
in the queue and runs again) and the job's ``cancel_requested`` column (``lipsyncd cancel``; a
queued job with that flag is never taken, and the intake thread files it at once).

A job whose model is missing is not failed: it stays queued with the reason as a visible
note, logged once, and is tried again every ``service.model_retry_interval`` seconds, so
dropping the model file in later just works.

The queue's pause flag (``lipsyncd pause``, the dashboard) is read before taking each job: the
running job finishes, no new one starts until ``lipsyncd resume``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from lipsyncd.engine.errors import Cancelled, EngineError, IncompleteInputError
from lipsyncd.engine.options import Progress, RenderOptions, RenderResult

from . import attempts, logs, slot_status
from .config import Config
from .engine_port import Engine, EngineFactory
from .executor import (
    CANCELLED,
    DONE,
    FAILED,
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
from .filing import PREVIEW_DIR, file_job, finish_filing, work_paths
from .jobfolder import on_disk
from .names import readable
from .progress import VideoMeter
from .report import PREVIEW_ONLY, face_warning
from .share import ShareGuard, is_waiting_note, waiting_note
from .stability import InputWait
from .states import JobState, TaskState
from .store import Job, Store, Task

log = logging.getLogger(__name__)

CANCEL_CHECK_S = 0.5
"""Longest time between two reads of a running job's cancel flag, so `lipsyncd cancel` takes
effect within about a second even where progress is written less often."""
SHARE_CHECK_S = 1.0
"""During a render the share is looked at no more often than this."""
WAITING = "Waiting: "
"""Prefix of the note on a job that cannot start yet; cleared once it can."""
INTERRUPTED = "Interrupted by a service stop; it runs again at the next start."
POLL_S = 0.2
"""How long the runner waits for news from the slots between its checks of the stop and cancel flags."""
IDLE_ALERT_S = 60.0
"""Jobs queued but nothing rendering for this long is logged as an alert."""


class Requeued(StrEnum):
    """How an attempt ended that puts its job back in the queue (not a job state: it stays queued)."""

    INTERRUPTED = "interrupted"
    """The service stops, the share went away under the render, or the executor cannot be reached."""
    INCOMPLETE = "incomplete"
    """An input looked incomplete (still being copied?); it runs once the file is whole."""


@dataclass(frozen=True)
class NotReady:
    """Why a queued job cannot start now."""

    reason: str
    for_good: bool
    """True: it never can as it was queued (file it as failed); False: it waits and is tried again."""


class Runner:
    """Runs queued jobs; one instance, in one thread, with its own database connection."""

    def __init__(self, config: Config, engine_factory: EngineFactory, stop: threading.Event,
                 share: ShareGuard | None = None, worker_engine: EngineSpec | None = None) -> None:
        self.config = config
        self.share = share
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self.stop = stop
        self.heartbeat = time.monotonic()
        self._blocked_until: dict[int, float] = {}
        self._incomplete = InputWait(config.watch.quiet_period, config.watch.max_wait)
        self._told: set[str] = set()
        self._share_gone: str | None = None
        self._held_input: IncompleteInputError | None = None
        """A video of the running job found an input still being copied: the job waits for it."""
        self._render_fps: float | None = None
        """The last render speed measured: the first ETA of the next video."""
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
        """Jobs queued but every slot idle for :data:`IDLE_ALERT_S`: say so once, with why. Not
        while the queue is paused or the share is away: then nothing is meant to start."""
        queued = store.jobs_in(JobState.QUEUED)
        if not queued or store.paused or (self.share is not None and self.share.last_reason):
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
        """File filing put off while the share was away, then (unless the queue is paused) claim
        and run the first job that can start. True if it did work."""
        if self.stop.is_set() or self._share_paused(store):
            return False
        for job in store.jobs_in(JobState.FILING):  # filing put off while the share was away
            if is_waiting_note(job.note):
                finish_filing(store, job.id, self.config.watch.ignore, self.share, self.config.jobs.keep_inputs)
                return True
        if store.paused:  # `lipsyncd pause`: the intake thread still files cancelled jobs; none starts
            return False
        now = time.monotonic()
        for job in store.jobs_in(JobState.QUEUED):
            if job.cancel_requested:  # the intake thread files it
                continue
            if self._blocked_until.get(job.id, 0.0) > now or self._held_for_input(store, job) \
                    or not self._admit(store, job):
                continue
            if store.claim(job.id):
                try:
                    self._run(store, job.id)
                except Exception as exc:  # a bug must fail this job, not stop the service in a loop
                    if reason := self._share_lost():
                        store.interrupt(job.id, waiting_note(reason))
                        return True
                    log.exception("job %d (%s): internal error", job.id, job.name)
                    self._file(store, job.id, JobState.FAILED, internal_error(exc))
                return True
        return False

    def _share_paused(self, store: Store) -> bool:
        """While the share is away nothing starts and queued jobs say why; once it is back that
        note goes. True while it is away."""
        if self.share is None:
            return False
        reason = self.share.check()
        for job in store.jobs_in(JobState.QUEUED):
            if reason and job.note != waiting_note(reason):
                store.set_note(job.id, waiting_note(reason))
            elif not reason and is_waiting_note(job.note):
                store.set_note(job.id, None)
        return reason is not None

    def _share_lost(self, max_age: float = 0.0) -> str | None:
        """Why the share is away, if it is: then a failure is the share's, not the job's. The
        answer sticks for the rest of the job's attempt, even if the share is back at once."""
        reason = self.share.check(max_age) if self.share is not None else None
        self._share_gone = reason or self._share_gone
        return reason

    def _held_for_input(self, store: Store, job: Job) -> bool:
        """An input looked incomplete: wait until it changed and settled; fail it after max_wait."""
        verdict = self._incomplete.verdict(job.id, work_paths(Path(job.work_dir))[0])
        if verdict == "give up":
            self._file(store, job.id, JobState.FAILED, self._incomplete.give_up(job.id))
        return verdict != "run"

    def _incomplete_input(self, job: Job, inputs: Path, exc: IncompleteInputError) -> tuple[Requeued, str]:
        """Not done, not failed: back to the queue, with the reason as its note, until the file is whole."""
        log.warning("job %d (%s): %s", job.id, job.name, exc)
        self._incomplete.hold(job.id, inputs, exc)
        return Requeued.INCOMPLETE, f"{WAITING}{exc}"

    def _not_ready(self, job: Job) -> NotReady | None:
        """Why the engine cannot start this job now (None: it can). Only looks; the engine is
        made on first use."""
        try:
            options = RenderOptions.from_mapping(job.option_values)
        except ValueError as exc:  # queued by an older version whose options this one does not know
            return NotReady(f"The job's engine options are not valid any more ({exc}). "
                            "Fix job.yaml and drop the folder into the inbox again.", for_good=True)
        try:
            if self._engine is None:
                self._engine = self._engine_factory()
            self._engine.check_ready(options)
        except Exception as exc:  # noqa: BLE001 - missing model, or no engine (no GPU driver): wait
            return NotReady(str(exc), for_good=False)
        return None

    def _admit(self, store: Store, job: Job) -> bool:
        """Act on :meth:`_not_ready`: file a job that can never start, put one that must wait
        aside with the reason as its note (logged once), or clear that note once it can start.
        True if it may start now."""
        blocker = self._not_ready(job)
        if blocker is None:
            self._blocked_until.pop(job.id, None)
            if job.note and job.note.startswith(WAITING):
                store.set_note(job.id, None)
            return True
        if blocker.for_good:
            self._file(store, job.id, JobState.FAILED, blocker.reason)
            return False
        note = f"{WAITING}{blocker.reason}"
        if note not in self._told:
            self._told.add(note)
            log.error("job %d (%s) cannot start: %s", job.id, job.name, blocker.reason)
        if job.note != note:
            store.set_note(job.id, note)
        self._blocked_until[job.id] = time.monotonic() + self.config.service.model_retry_interval
        return False

    def _run(self, store: Store, job_id: int) -> None:
        job = store.job(job_id)
        inputs, outputs, job_log = work_paths(Path(job.work_dir))
        outputs.mkdir(exist_ok=True)
        with logs.job_log(job_log):
            log.info("job %d (%s): started (attempt %d)", job.id, job.name, job.attempt)
            outcome, error = self._render_all(store, job, inputs, outputs)
            log.info("job %d (%s): %s", job.id, job.name, error or outcome or "finished")
        if outcome is Requeued.INTERRUPTED:
            store.interrupt(job_id, error or INTERRUPTED)
            return
        if outcome is Requeued.INCOMPLETE:
            store.interrupt(job_id, error or "")
            return
        self._file(store, job_id, outcome, error)

    def _file(self, store: Store, job_id: int, outcome: JobState | None, error: str | None = None) -> None:
        file_job(store, job_id, self.config.folders, self.config.watch.ignore, outcome=outcome, error=error,
                 share=self.share, keep_inputs=self.config.jobs.keep_inputs)

    def _render_all(self, store: Store, job: Job, inputs: Path,
                    outputs: Path) -> tuple[JobState | Requeued | None, str | None]:
        """Preview, then render every pending video on the executor's slots; (outcome, error) with
        outcome None meaning "from the tasks"."""
        assert self._engine is not None and job.audio is not None
        options = RenderOptions.from_mapping(job.option_values)
        self._share_gone = self._held_input = None
        try:
            audio = self._engine.load_audio(on_disk(inputs, job.audio), options)
        except IncompleteInputError as exc:
            return self._incomplete_input(job, inputs, exc)
        except EngineError as exc:
            if reason := self._share_lost():
                return Requeued.INTERRUPTED, waiting_note(reason)
            message = f"The audio {job.audio} cannot be used: {readable(str(exc))}"
            for task in store.tasks(job.id):
                if task.state != TaskState.DONE:
                    store.task_finished(task.id, TaskState.FAILED, message)
            return JobState.FAILED, message
        should_stop = self._stop_check(store, job.id)
        self._preview_all(store, job, audio, inputs, outputs, options, should_stop)
        if job.preview_seconds:
            self._preview_clips(store, job, audio, inputs, outputs, options, should_stop)
        if job.preview_only and not should_stop():
            return JobState.SKIPPED, PREVIEW_ONLY
        try:
            executor = self._executor_for(self._engine)
            executor.recover(Path(job.work_dir))
            shared = executor.share_audio(audio, Path(job.work_dir))
            try:
                self._render_on_slots(store, job, executor, shared, inputs, outputs, should_stop)
            finally:
                executor.release_audio(shared)
                self._show_slots(executor, force=True)
        except ExecutorLost as exc:
            return Requeued.INTERRUPTED, self._executor_lost(store, job, exc)
        if self._held_input is not None:
            return self._incomplete_input(job, inputs, self._held_input)
        if self.stop.is_set():
            return Requeued.INTERRUPTED, None
        if self._share_gone or self._share_lost():
            return Requeued.INTERRUPTED, waiting_note(self._share_gone or "")
        if store.cancel_requested(job.id):
            for task in store.tasks(job.id):
                if task.state in (TaskState.QUEUED, TaskState.RUNNING):
                    store.task_finished(task.id, TaskState.CANCELLED)
            return JobState.CANCELLED, None
        return None, None

    def _render_on_slots(self, store: Store, job: Job, executor: Executor, shared: Any, inputs: Path,
                         outputs: Path, should_stop: Callable[[], bool]) -> None:
        """Keep every slot busy with the job's pending videos until all have ended (or the job
        stops, or one video says the whole job cannot go on: then every slot's video of the job
        is cancelled and waited for)."""
        pending = deque(task for task in store.tasks(job.id) if _pending(task, outputs))
        running: dict[str, tuple[Task, VideoWork, Callable[[Progress], None]]] = {}
        lost: Counter[int] = Counter()
        stopping = halt = False
        while pending or running:
            if not stopping and (halt or should_stop()):
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
                elif self._ended(store, task, work, report, outputs, stopping):
                    halt = True
            self._show_slots(executor)

    def _submit(self, store: Store, job: Job, task: Task, executor: Executor, shared: Any,
                inputs: Path) -> VideoWork:
        store.task_started(task.id)
        attempt = store.task(task.id).attempt
        key = attempts.attempt_key(job.id, task.id, attempt)
        output = attempts.prepare(Path(job.work_dir), key, task.output_name)
        work = VideoWork(key, job.id, task.id, attempt, on_disk(inputs, task.video), output, job.option_values,
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

    def _ended(self, store: Store, task: Task, work: VideoWork, report: Report, outputs: Path,
               stopping: bool) -> bool:
        """Record how an attempt ended; only a finished attempt's output is published, once.
        True when the whole job cannot go on: an input is still being copied, or the share went
        away under the render (neither is the video's fault, so the video is not failed)."""
        if report.kind == DONE and attempts.publish(work.output, outputs / task.output_name):
            self._task_done(store, task, report.result)
            return False
        attempts.discard(work.output)
        if report.kind == CANCELLED or (report.kind == LOST and (stopping or self.stop.is_set() or
                                                                 store.cancel_requested(task.job_id))):
            return False  # the job stops: its task is put back in the queue or cancelled with it
        if report.kind == FAILED and report.error_type == IncompleteInputError.__name__:
            self._held_input = IncompleteInputError(task.video, report.detail or "it ends early")
            return True
        if report.kind == FAILED and self._share_lost():
            return True
        if report.kind == LOST:
            message = (f"The video could not be rendered: {report.message}, {self.config.engine.max_attempts} "
                       "times in a row. It may be too large for the GPU's memory or trip a driver problem; "
                       "try a shorter or smaller video, then run lipsyncd retry for this job.")
        elif report.kind == DONE:
            message = internal_error(RuntimeError("the render finished without writing its output"))
        else:
            message = report.message or "The video could not be rendered."
        store.task_finished(task.id, TaskState.FAILED, message)
        log.warning("%s: failed: %s", task.video, message)
        return False

    @staticmethod
    def _task_done(store: Store, task: Task, result: RenderResult | None) -> None:
        """A video rendered (its output published): done, with a warning when few frames had a face."""
        warning = face_warning(result.frames, result.frames_with_face) if result is not None else None
        store.task_finished(task.id, TaskState.DONE, warning)
        if result is not None:
            log.info("%s: done, %d frames at %.2f fps in %.1f s (face in %d frames)", task.video,
                     result.frames, result.fps, result.seconds, result.frames_with_face)
        if warning:
            log.warning("%s: %s", task.video, warning)

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

    def _preview_all(self, store: Store, job: Job, audio: Any, inputs: Path, outputs: Path,
                     options: RenderOptions, should_stop: Callable[[], bool]) -> None:
        """A preview of every pending video (``preview/<output>.jpg`` + ``.json`` in the work
        folder, filed with the results) before the first render, so a wrong upload shows in
        seconds. Done here, with the service's own engine (a preview is a few frames), whatever
        the executor."""
        assert self._engine is not None
        engine = self._engine
        folder = Path(job.work_dir) / PREVIEW_DIR

        def preview(task: Task, image: Path) -> None:
            result = engine.preview(audio, on_disk(inputs, task.video), image, options,
                                    progress=self._progress_writer(store, task.id, stage="preview"),
                                    should_stop=should_stop, video_digest=task.video_sha256)
            summary = {**result.as_dict(), "image": image.name}
            text = readable(json.dumps(summary, ensure_ascii=False))  # names not in UTF-8 (see names.readable)
            image.with_suffix(".json").write_text(text, encoding="utf-8")
            log.info("%s: preview: %s", task.video, result.summary)

        self._for_each_preview(store, job, outputs, should_stop, "preview",
                               lambda task: folder / f"{Path(task.output_name).stem}.jpg", preview)

    def _preview_clips(self, store: Store, job: Job, audio: Any, inputs: Path, outputs: Path,
                       options: RenderOptions, should_stop: Callable[[], bool]) -> None:
        """job.yaml ``preview_seconds``: the first seconds of every pending video, rendered as
        they will be (the same render, on the audio's start), into ``preview/<output>-preview.mp4``
        and named in its preview's figures. Done here, like the previews."""
        assert self._engine is not None and job.preview_seconds
        engine = self._engine
        folder = Path(job.work_dir) / PREVIEW_DIR
        head = engine.audio_head(audio, job.preview_seconds)

        def clip(task: Task, target: Path) -> None:
            folder.mkdir(exist_ok=True)
            engine.render(head, on_disk(inputs, task.video), target, options,
                          progress=self._progress_writer(store, task.id, stage="preview"),
                          should_stop=should_stop, video_digest=task.video_sha256)
            figures = folder / f"{Path(task.output_name).stem}.json"
            if figures.is_file():
                summary = {**json.loads(figures.read_text(encoding="utf-8")), "clip": target.name}
                figures.write_text(json.dumps(summary, ensure_ascii=False), encoding="utf-8")
            log.info("%s: preview clip of %g s written", task.video, job.preview_seconds)

        self._for_each_preview(store, job, outputs, should_stop, "preview clip",
                               lambda task: folder / f"{Path(task.output_name).stem}-preview.mp4", clip)

    @staticmethod
    def _for_each_preview(store: Store, job: Job, outputs: Path, should_stop: Callable[[], bool], what: str,
                          target_of: Callable[[Task], Path], make: Callable[[Task, Path], None]) -> None:
        """``make(task, target)`` for every pending video whose ``target`` is not there yet (an
        earlier attempt made it), shown as that video's running stage. A failure is logged and
        left to the video's render, which meets the same problem and reports it."""
        for task in store.tasks(job.id):
            target = target_of(task)
            if not _pending(task, outputs) or target.is_file():
                continue
            if should_stop():
                return
            store.task_started(task.id)
            try:
                make(task, target)
            except Cancelled:
                return
            except Exception as exc:  # noqa: BLE001 - the render meets the same problem and reports it
                log.warning("%s: no %s: %s", task.video, what, exc)
            finally:
                store.task_waiting(task.id)

    def _stop_check(self, store: Store, job_id: int) -> Callable[[], bool]:
        """should_stop for the engine: the stop flag at once; the share at most once a second
        (a few ``stat`` calls); the cancel flag is a database read, so at most every
        :data:`CANCEL_CHECK_S` (should_stop is called every few frames)."""
        interval = min(self.config.service.progress_interval, CANCEL_CHECK_S)
        last = [float("-inf"), False]

        def should_stop() -> bool:
            if self.stop.is_set() or self._share_lost(SHARE_CHECK_S):
                return True
            now = time.monotonic()
            if now - last[0] >= interval:
                last[0], last[1] = now, store.cancel_requested(job_id)
            return bool(last[1])

        return should_stop

    def _progress_writer(self, store: Store, task_id: int, stage: str | None = None) -> Callable[[Progress], None]:
        """Progress into SQLite with speed and ETA, throttled by time (every callback is measured,
        one write per ``progress_interval``, plus at once when the stage changes or the video
        ends); every call also counts as the loop being alive. ``stage`` overrides the engine's."""
        interval = self.config.service.progress_interval
        meter = VideoMeter(render_fps_hint=self._render_fps)
        last_at, last_stage = float("-inf"), ""

        def progress(p: Progress) -> None:
            nonlocal last_at, last_stage
            now = time.monotonic()
            self.heartbeat = now
            snap = meter.update(stage or p.stage, p.frames_done, p.frames_total, now)
            if snap.stage == "render" and snap.fps:
                self._render_fps = snap.fps
            if now - last_at >= interval or p.frames_done >= p.frames_total or snap.stage != last_stage:
                last_at, last_stage = now, snap.stage
                store.task_progress(task_id, snap.frames_done, snap.frames_total, snap.stage, snap.fps, snap.eta_s)

        return progress


def _pending(task: Task, outputs: Path) -> bool:
    """Does this video still need its render? (not done with its output there; not failed in an
    earlier, interrupted attempt: those are not retried)"""
    if task.state == TaskState.DONE and (outputs / task.output_name).is_file():
        return False
    return task.state != TaskState.FAILED
