"""Where each file of a finished job goes: every input ends in exactly one place.

Every file the user dropped travels: notes, OS leftovers such as ``.DS_Store`` and symbolic
links (returned as links, never followed) alike. Nothing of theirs is deleted, unless the
config says ``jobs.keep_inputs: delete`` and the job went entirely well (:func:`drops_inputs`).

=================  ============================================================================
outcome            files go to
=================  ============================================================================
done               ``outbox/<job>/``: the outputs, ``report.txt``, ``job.log``, the inputs in ``input/``
                   (none with ``jobs.keep_inputs: delete``, see :func:`drops_inputs`), ``preview/``
done, some failed  ``outbox/<job>/``: the good outputs, their input videos in ``input/``, the report;
                   ``error/<job>/``: the failed videos, the audio, job.yaml, other files, ``error.txt``
failed, cancelled  ``error/<job>/``: the folder as it was dropped, plus ``error.txt`` and ``job.log``
skipped            ``outbox/<job>/``: ``report.txt`` (which job it repeats) and the inputs in ``input/``;
                   a ``preview_only`` job also its ``preview/``
=================  ============================================================================

Filing happens in two recorded steps: :func:`settle` decides the outcome and the destination
folder names and writes them to the database; :func:`complete` publishes whichever destination
does not exist yet, deletes the work folder, and marks the job finished. A crash anywhere in
between leaves the work folder whole, and running :func:`complete` again finishes the job
without duplicating a result folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import logs
from .config import Folders
from .jobfolder import is_junk, is_link, link_note, list_files
from .names import readable, unique_in_dir, unique_name, windows_safe
from .publish import Entry, PublishError, publish_dir, remove_tree
from .report import INPUTS_DELETED, error_text, job_warnings, repeat_note, report_text, short
from .share import ShareGuard, is_waiting_note, waiting_note
from .states import TO_OUTBOX, JobState, TaskState
from .store import Store, Task

log = logging.getLogger(__name__)

INPUT_DIR = "input"
OUTPUT_DIR = "output"
PREVIEW_DIR = "preview"
"""Previews made before the render (``<output>.jpg`` + ``.json``); filed with the results as
``outbox/<job>/preview/`` (an error folder stays the folder as dropped; job.log has the figures)."""
JOB_LOG = "job.log"


def work_paths(work_dir: Path) -> tuple[Path, Path, Path]:
    """(inputs, outputs, log file) of a claimed job's work folder."""
    return work_dir / INPUT_DIR, work_dir / OUTPUT_DIR, work_dir / JOB_LOG


def settle(store: Store, job_id: int, folders: Folders, outcome: JobState | None = None,
           error: str | None = None, only_from: JobState | None = None, keep: Iterable[str | None] = ()) -> bool:
    """Decide and record the outcome (derived from the tasks unless given) and destinations;
    with ``only_from``, only while the job is in that state (False when it no longer was);
    a folder in ``keep`` that is already in place is reused as its destination."""
    job = store.job(job_id)
    tasks = store.tasks(job_id)
    done = sum(t.state == TaskState.DONE for t in tasks)
    if outcome is None:
        outcome = JobState.DONE if done else JobState.FAILED
    to_outbox = outcome in TO_OUTBOX
    to_error = outcome in (JobState.FAILED, JobState.CANCELLED) or (outcome == JobState.DONE and done < len(tasks))
    name = windows_safe(job.name, fallback=f"job {job.id}")
    kept = {p.parent: p for p in (Path(k) for k in keep if k) if p.is_dir()}
    outbox = kept.get(folders.outbox) or folders.outbox / unique_in_dir(folders.outbox, name) if to_outbox else None
    error_dir = kept.get(folders.error) or folders.error / unique_in_dir(folders.error, name) if to_error else None
    if outbox and error_dir and error is None:  # partly done: say so where `lipsyncd status` shows it
        error = f"{len(tasks) - done} of {len(tasks)} videos failed; see {short(error_dir)}/error.txt"
    if outcome == JobState.DONE and error is None:  # done, but hardly lip-synced: not a silent ok
        error = job_warnings(tasks)
    return store.begin_filing(job_id, outcome, error, outbox, error_dir, only_from)


def complete(store: Store, job_id: int, ignore: Iterable[str] = (), keep_inputs: str = "keep") -> None:
    """Publish the recorded destinations, remove the work folder, finish the job.
    Raises :class:`PublishError` (nothing half-written is left; the work folder is untouched).
    ``keep_inputs``: config ``jobs.keep_inputs``; see :func:`drops_inputs`."""
    job = store.job(job_id)
    tasks = store.tasks(job_id)
    work = Path(job.work_dir)
    inputs, outputs, job_log = work_paths(work)
    drop = drops_inputs(keep_inputs, job.outcome, tasks, job.error_path)
    files = list_files(inputs) if inputs.is_dir() and not drop else []
    remarks = [link_note(readable(f)) for f in files if is_link(inputs, f) and not is_junk(f, ignore)]
    if drop:
        remarks.append(INPUTS_DELETED)
    duplicate = store.find_finished_duplicate(job.content_hash, job.id) if job.content_hash else None
    if duplicate is not None:
        remarks.insert(0, repeat_note(duplicate))
    log_file = [Entry(JOB_LOG, source=job_log)] if job_log.is_file() else []
    preview_files = list_files(work / PREVIEW_DIR) if (work / PREVIEW_DIR).is_dir() else []
    previews = [Entry(f"{PREVIEW_DIR}/{name}", source=work / PREVIEW_DIR / name) for name in preview_files]
    good = [t for t in tasks if t.state == TaskState.DONE] if job.outbox_path else []
    outbox = Path(job.outbox_path) if job.outbox_path else None
    error_dir = Path(job.error_path) if job.error_path else None

    if outbox is not None and not outbox.exists():
        used = {t.video for t in good}
        kept = [f for f in files if readable(f) in used] if error_dir else files
        entries = [Entry(t.output_name, source=outputs / t.output_name) for t in good]
        entries += [Entry(f"{INPUT_DIR}/{f}", source=inputs / f) for f in kept]
        text = report_text(job, tasks, job.outcome or JobState.DONE, str(error_dir) if error_dir else None, remarks)
        publish_dir([*entries, Entry("report.txt", text=text), *log_file, *previews], outbox)
        log.info("job %d (%s): results in %s", job.id, job.name, outbox)
    if outbox is not None:  # there are good videos only when there is an outbox folder
        for task in good:
            store.set_output_path(task.id, outbox / task.output_name)

    if error_dir is not None and not error_dir.exists():
        moved = {t.video for t in good}
        rest = [f for f in files if readable(f) not in moved]
        error_name = unique_name("error.txt", rest)
        log_entries = [Entry(unique_name(JOB_LOG, [*rest, error_name]), source=job_log)] if log_file else []
        text = error_text(job, tasks, str(outbox) if outbox else None, remarks)
        publish_dir([*(Entry(f, source=inputs / f) for f in rest), Entry(error_name, text=text), *log_entries],
                    error_dir)
        log.info("job %d (%s): moved to %s: %s", job.id, job.name, error_dir, job.error or "see error.txt")

    remove_tree(work)
    store.finish(job_id)


def drops_inputs(keep_inputs: str, outcome: str | None, tasks: Sequence[Task], error_path: str | None) -> bool:
    """With ``jobs.keep_inputs: delete``, are this job's inputs deleted rather than filed? Only
    when it went entirely well: done, every video rendered, none with a warning (a video with
    hardly a face is rendered again from its input), nothing sent to ``error/``. A job that
    failed in any way, was cancelled, skipped or only previewed keeps every input."""
    return (keep_inputs == "delete" and outcome == JobState.DONE and error_path is None and bool(tasks)
            and all(t.state == TaskState.DONE and not t.error for t in tasks))


def file_job(store: Store, job_id: int, folders: Folders, ignore: Iterable[str] = (),
             outcome: JobState | None = None, error: str | None = None, only_from: JobState | None = None,
             share: ShareGuard | None = None, keep_inputs: str = "keep") -> None:
    """:func:`settle` then :func:`complete`; a filing failure marks the job failed with the
    reason, keeps its inputs in the work folder, and is logged — it never propagates."""
    if settle(store, job_id, folders, outcome, error, only_from):
        finish_filing(store, job_id, ignore, share, keep_inputs)


def file_cancelled(store: Store, folders: Folders, ignore: Iterable[str] = ()) -> list[int]:
    """File every queued job whose cancel was asked for, at once, even while another job renders
    (the intake thread calls this each round). The runner never takes such a job (``claim``
    refuses it) and it is filed only while still queued, so it is never filed twice."""
    filed = []
    for job in store.jobs_in(JobState.QUEUED):
        if job.cancel_requested:
            with logs.job_log(work_paths(Path(job.work_dir))[2]):
                log.info("job %d (%s): cancelled before it started", job.id, job.name)
                for task in store.tasks(job.id):
                    if task.state == TaskState.QUEUED:
                        store.task_finished(task.id, TaskState.CANCELLED)
                file_job(store, job.id, folders, ignore, outcome=JobState.CANCELLED, only_from=JobState.QUEUED)
            filed.append(job.id)
    return filed


def refile(store: Store, job_id: int, folders: Folders, ignore: Iterable[str] = ()) -> None:
    """File again a finished job whose work folder is still there (its filing failed: a full
    disk, a share that went away), so no input stays behind in the hidden work area. Result
    folders already published for it are kept; the outcome follows its tasks again."""
    job = store.job(job_id)
    settle(store, job_id, folders, JobState.CANCELLED if job.cancel_requested else None, job.error,
           keep=(job.outbox_path, job.error_path))
    finish_filing(store, job_id, ignore)


def finish_filing(store: Store, job_id: int, ignore: Iterable[str] = (), share: ShareGuard | None = None,
                  keep_inputs: str = "keep") -> None:
    """:func:`complete`, turning a :class:`PublishError` into a failed job that ``retry`` can rerun.
    While the share is not there (before, or found out by a failure) nothing is written: the
    job stays in ``filing`` with a note, and the runner files it once the share is back.
    Filing resumed after a crash passes no ``keep_inputs``: the inputs are then kept."""
    try:
        if share is not None and (reason := share.check()):
            _wait_for_share(store, job_id, reason)
            return
        if is_waiting_note(store.job(job_id).note):
            store.set_note(job_id, None)
        complete(store, job_id, ignore, keep_inputs)
    except OSError as exc:
        if share is not None and (reason := share.check()):
            _wait_for_share(store, job_id, reason)
            return
        if not isinstance(exc, PublishError):
            raise
        job = store.job(job_id)
        log.error("job %d (%s): %s (inputs kept in %s)", job.id, job.name, exc.strerror, job.work_dir)
        store.filing_failed(job_id, str(exc.strerror),
                            *(p if p and Path(p).exists() else None for p in (job.outbox_path, job.error_path)))


def _wait_for_share(store: Store, job_id: int, reason: str) -> None:
    job = store.job(job_id)
    log.warning("job %d (%s): results are filed once the share is back (%s)", job.id, job.name, reason)
    store.set_note(job_id, waiting_note(reason))
