"""Where each file of a finished job goes: every input ends in exactly one place.

=================  ============================================================================
outcome            files go to
=================  ============================================================================
done               ``outbox/<job>/``: the outputs, ``report.txt``, ``job.log``, the inputs in ``input/``
done, some failed  ``outbox/<job>/``: the good outputs, their input videos in ``input/``, the report;
                   ``error/<job>/``: the failed videos, the audio, job.yaml, other files, ``error.txt``
failed, cancelled  ``error/<job>/``: the folder as it was dropped, plus ``error.txt`` and ``job.log``
skipped            ``outbox/<job>/``: ``report.txt`` (which job it repeats) and the inputs in ``input/``
=================  ============================================================================

Filing happens in two recorded steps: :func:`settle` decides the outcome and the destination
folder names and writes them to the database; :func:`complete` publishes whichever destination
does not exist yet, deletes the work folder, and marks the job finished. A crash anywhere in
between leaves the work folder whole, and running :func:`complete` again finishes the job
without duplicating a result folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from .config import Folders
from .filing import Entry, FilingError, publish_dir, remove_tree
from .jobfolder import is_junk, list_files
from .names import unique_in_dir, unique_name, windows_safe
from .report import error_text, report_text, short
from .store import Store

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


def settle(store: Store, job_id: int, folders: Folders, outcome: str | None = None,
           error: str | None = None) -> None:
    """Decide and record the outcome (derived from the tasks unless given) and destinations."""
    job = store.job(job_id)
    tasks = store.tasks(job_id)
    done = sum(t.state == "done" for t in tasks)
    if outcome is None:
        outcome = "done" if done else "failed"
    to_outbox = outcome in ("done", "skipped")
    to_error = outcome in ("failed", "cancelled") or (outcome == "done" and done < len(tasks))
    name = windows_safe(job.name, fallback=f"job {job.id}")
    outbox = folders.outbox / unique_in_dir(folders.outbox, name) if to_outbox else None
    error_dir = folders.error / unique_in_dir(folders.error, name) if to_error else None
    if to_outbox and to_error and error is None:  # partly done: say so where `lipsyncd status` shows it
        error = f"{len(tasks) - done} of {len(tasks)} videos failed; see {short(error_dir)}/error.txt"
    store.begin_filing(job_id, outcome, error, outbox, error_dir)


def complete(store: Store, job_id: int, ignore: Iterable[str] = ()) -> None:
    """Publish the recorded destinations, remove the work folder, finish the job.
    Raises :class:`FilingError` (nothing half-written is left; the work folder is untouched)."""
    job = store.job(job_id)
    tasks = store.tasks(job_id)
    work = Path(job.work_dir)
    inputs, outputs, job_log = work_paths(work)
    files = [f for f in list_files(inputs) if not is_junk(f, ignore)] if inputs.is_dir() else []
    logs = [Entry(JOB_LOG, source=job_log)] if job_log.is_file() else []
    preview_files = list_files(work / PREVIEW_DIR) if (work / PREVIEW_DIR).is_dir() else []
    previews = [Entry(f"{PREVIEW_DIR}/{name}", source=work / PREVIEW_DIR / name) for name in preview_files]
    good = [t for t in tasks if t.state == "done"] if job.outbox_path else []
    outbox = Path(job.outbox_path) if job.outbox_path else None
    error_dir = Path(job.error_path) if job.error_path else None

    if outbox is not None and not outbox.exists():
        kept = [t.video for t in good] if error_dir else files
        entries = [Entry(t.output_name, source=outputs / t.output_name) for t in good]
        entries += [Entry(f"{INPUT_DIR}/{f}", source=inputs / f) for f in kept]
        text = report_text(job, tasks, job.outcome or "done", str(error_dir) if error_dir else None)
        publish_dir([*entries, Entry("report.txt", text=text), *logs, *previews], outbox)
        log.info("job %d (%s): results in %s", job.id, job.name, outbox)
    for task in good:
        store.set_output_path(task.id, outbox / task.output_name)

    if error_dir is not None and not error_dir.exists():
        moved = {t.video for t in good}
        rest = [f for f in files if f not in moved]
        error_name = unique_name("error.txt", rest)
        log_entries = [Entry(unique_name(JOB_LOG, [*rest, error_name]), source=job_log)] if logs else []
        text = error_text(job, tasks, str(outbox) if outbox else None)
        publish_dir([*(Entry(f, source=inputs / f) for f in rest), Entry(error_name, text=text), *log_entries],
                    error_dir)
        log.info("job %d (%s): moved to %s: %s", job.id, job.name, error_dir, job.error or "see error.txt")

    remove_tree(work)
    store.finish(job_id)


def file_job(store: Store, job_id: int, folders: Folders, ignore: Iterable[str] = (),
             outcome: str | None = None, error: str | None = None) -> None:
    """:func:`settle` then :func:`complete`; a filing failure marks the job failed with the
    reason, keeps its inputs in the work folder, and is logged — it never propagates."""
    settle(store, job_id, folders, outcome, error)
    finish_filing(store, job_id, ignore)


def finish_filing(store: Store, job_id: int, ignore: Iterable[str] = ()) -> None:
    """:func:`complete`, turning a :class:`FilingError` into a failed job that ``retry`` can rerun."""
    try:
        complete(store, job_id, ignore)
    except FilingError as exc:
        job = store.job(job_id)
        log.error("job %d (%s): %s (inputs kept in %s)", job.id, job.name, exc.strerror, job.work_dir)
        store.filing_failed(job_id, str(exc.strerror),
                            *(p if p and Path(p).exists() else None for p in (job.outbox_path, job.error_path)))
