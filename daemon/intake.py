"""From a folder in the inbox to a queued job: wait until copied, claim, validate, record.

Claiming is one atomic rename of ``inbox/<name>`` to ``inbox/.processing/job-<id>/input``:
the same file system as the inbox (no copying a 2 GB video over the network twice), and out
of the users' sight, so nobody edits a running job. The job row is written (state ``intake``)
*before* the rename and completed after it, so :func:`recover` can tell, after a crash, which
of the two happened. A folder that is not a valid job goes straight to ``error/`` with
``error.txt``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import logs
from .config import Config
from .filing import INPUT_DIR, file_cancelled, file_job, finish_filing, refile, work_paths
from .jobfolder import JobFolderError, content_hash, file_hashes, is_junk, list_files, load_spec, output_names
from .names import readable, unique_in_dir
from .publish import TEMP_PREFIX, move_dir, remove_tree
from .report import repeat_note
from .share import ShareGuard
from .stability import Readiness, StabilityTracker
from .states import FINAL_STATES, JobState
from .store import Job, Store
from .watcher import InboxWatcher

log = logging.getLogger(__name__)


def claim(store: Store, config: Config, name: str) -> int | None:
    """Move inbox folder ``name`` into the work area and register it; the job id, or None
    when it holds nothing but junk yet. An ``OSError`` (no permission to move it) leaves the
    folder in the inbox and no trace in the database."""
    src = config.folders.inbox / name
    if not any(not is_junk(f, config.watch.ignore) for f in list_files(src)):
        return None
    job = store.begin_intake(readable(name), config.folders.processing)
    work = Path(job.work_dir)
    try:
        work.mkdir(parents=True)
        os.rename(src, work / INPUT_DIR)
    except OSError:
        remove_tree(work)
        store.drop_intake(job.id)
        raise
    register(store, config, job.id)
    return job.id


def register(store: Store, config: Config, job_id: int) -> None:
    """Validate a claimed folder and queue it, skip it as a duplicate, or file it to error/.
    What it finds starts the job's ``job.log``, so a refused job has one too."""
    job = store.job(job_id)
    inputs, _, job_log = work_paths(Path(job.work_dir))
    with logs.job_log(job_log):
        _register(store, config, job, inputs)


def _register(store: Store, config: Config, job: Job, inputs: Path) -> None:
    job_id = job.id
    try:
        spec = load_spec(inputs, defaults=config.engine.defaults, naming=config.jobs.naming,
                         ignore=config.watch.ignore)
        hashes = file_hashes(inputs, spec)
        digest = content_hash(hashes, spec)
    except (JobFolderError, OSError) as exc:
        reason = str(exc) if isinstance(exc, JobFolderError) else f"A file could not be read: {readable(str(exc))}"
        log.warning("job %d (%s): not a valid job: %s", job.id, job.name, reason)
        file_job(store, job_id, config.folders, config.watch.ignore, outcome=JobState.FAILED, error=reason)
        return
    store.set_content_hash(job_id, digest)
    duplicate = store.find_finished_duplicate(digest, job_id)
    if duplicate is not None:
        store.set_note(job_id, repeat_note(duplicate))
    if duplicate is not None and config.jobs.duplicates == "skip":
        log.info("job %d (%s): identical to job %d; skipped (jobs.duplicates: skip)", job.id, job.name, duplicate.id)
        file_job(store, job_id, config.folders, config.watch.ignore, outcome=JobState.SKIPPED)
        return
    names = output_names(spec, job.name)
    videos = [(video, output, hashes[video]) for video, output in zip(spec.videos, names, strict=True)]
    store.enqueue(job_id, audio=spec.audio, videos=videos, naming=spec.naming, priority=spec.priority,
                  options={**spec.options.as_dict(), **spec.job_settings()}, content_hash=digest)
    log.info("job %d (%s): queued, %d video(s)", job.id, job.name, len(spec.videos))


def recover(store: Store, config: Config) -> None:
    """Finish whatever a crash or stop interrupted, before anything new starts."""
    for job in store.jobs_in(JobState.INTAKE):
        work = Path(job.work_dir)
        if (work / INPUT_DIR).is_dir():
            register(store, config, job.id)
        else:  # the rename never happened: the folder is still in the inbox
            remove_tree(work)
            store.drop_intake(job.id)
    for job in store.jobs_in(JobState.RUNNING):
        log.info("job %d (%s): was interrupted; it will run again", job.id, job.name)
        store.interrupt(job.id, "Interrupted (the service stopped or crashed); running it again.")
    _remove_partial_copies(config)
    for job in store.jobs_in(JobState.FILING):
        finish_filing(store, job.id, config.watch.ignore)
    _recover_work_folders(store, config)


def _remove_partial_copies(config: Config) -> None:
    """Delete half-built result folders a crash left behind: they are only ever copies, their
    sources are deleted after, never before, the copy is complete."""
    for parent in (config.folders.outbox, config.folders.error, config.folders.inbox):
        for tmp in parent.glob(f"{TEMP_PREFIX}*.tmp"):
            log.info("removing %s, left over from an interrupted copy", tmp)
            remove_tree(tmp)


def _recover_work_folders(store: Store, config: Config) -> None:
    """No input stays in the hidden work area: a finished job whose work folder is still there
    (its filing failed: full disk, a share that went away) is filed again, and a work folder no
    job row knows (the database was deleted or replaced) goes back to the inbox."""
    processing = config.folders.processing
    if not processing.is_dir():
        return
    known = store.work_folders()
    for work in sorted(processing.iterdir()):
        if not work.is_dir() or work.name.startswith("."):
            continue
        inputs = work / INPUT_DIR
        if work in known:
            job_id, state = known[work]
            if state in FINAL_STATES and inputs.is_dir():
                log.info("job %d: %s but its inputs were still held; filing it again", job_id, state)
                refile(store, job_id, config.folders, config.watch.ignore)
            continue
        if inputs.is_dir():
            target = config.folders.inbox / unique_in_dir(config.folders.inbox, f"recovered {work.name}")
            log.warning("%s: unknown to the database; moved back to the inbox as %s", work, target.name)
            move_dir(inputs, target)
        remove_tree(work)


class Intake:
    """The intake loop: rescans, watcher hints, readiness checks (:class:`Readiness`), claims."""

    def __init__(self, config: Config, watcher: InboxWatcher, clock: Callable[[], float] = time.monotonic,
                 share: ShareGuard | None = None) -> None:
        self.config = config
        self.watcher = watcher
        self.share = share
        self.tracker = StabilityTracker(config.watch.quiet_period, config.watch.max_wait, clock)
        self.readiness = Readiness(config.watch, self.tracker, watcher.open_files)
        self._clock = clock
        self._next_rescan = 0.0
        self._told: set[str] = set()
        self.heartbeat = clock()

    def run(self, stop: threading.Event) -> None:
        store = Store(self.config.folders.database)
        try:
            while not stop.is_set():
                self.tick(store)
                stop.wait(self.config.watch.poll_interval)  # events wait for the next round: a big
                # copy sends thousands, and each round already re-checks every tracked folder
        finally:
            store.close()

    def tick(self, store: Store) -> list[int]:
        """One round: pick up names to watch, claim every folder that has finished copying."""
        now = self._clock()
        self.heartbeat = now
        if self.share is not None and self.share.check():
            self._next_rescan = now  # events are lost meanwhile: rescan everything once it is back
            return []
        file_cancelled(store, self.config.folders, self.config.watch.ignore)
        names = self.watcher.take()
        if now >= self._next_rescan:
            names |= self.rescan()
            self._next_rescan = now + self.config.watch.rescan_interval
        inbox = self.config.folders.inbox
        for name in names:
            if (inbox / name).is_dir():
                self.tracker.check(inbox / name)
        claimed = []
        for folder in self.tracker.tracked():
            try:
                if not folder.is_dir():
                    self.readiness.forget(folder)
                elif self.readiness.ready(folder):
                    job_id = claim(store, self.config, folder.name)
                    if job_id is not None:
                        self.readiness.forget(folder)
                        claimed.append(job_id)
            except OSError as exc:  # e.g. the service may not move it: say so once, retry at each rescan
                self._tell_once(folder.name, f"{readable(folder.name)}: cannot take it from the inbox "
                                             f"({exc.strerror}); lipsyncd doctor checks folder permissions")
                self.readiness.forget(folder)
            except Exception:  # one odd folder must not stop intake; the next rescan tries again
                log.exception("%s: could not take it from the inbox", readable(folder.name))
                self.readiness.forget(folder)
        return claimed

    def rescan(self) -> set[str]:
        """Every visible folder in the inbox; loose files are pointed out once."""
        names: set[str] = set()
        try:
            entries = list(self.config.folders.inbox.iterdir())
        except OSError as exc:
            log.error("cannot read the inbox %s: %s", self.config.folders.inbox, exc)
            return names
        for entry in entries:
            if entry.name.startswith(".") or is_junk(entry.name, self.config.watch.ignore):
                continue
            if entry.is_dir():
                names.add(entry.name)
            else:
                self._tell_once(entry.name, f"inbox: {readable(entry.name)!r} is a file, not a job folder; put it "
                                            "in a folder with the audio and video(s) of one job")
        return names

    def _tell_once(self, key: str, message: str) -> None:
        """Warn about a folder or file once, not at every round."""
        if key not in self._told:
            self._told.add(key)
            log.warning("%s", message)
