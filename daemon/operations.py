"""What ``lipsyncd retry`` and ``lipsyncd cancel`` do, as functions the CLI and tests call.

Both work on the database and the folders only, so they work whether or not the service is
running: a cancel is a flag the runner reads, a retry either re-queues inputs the service
still holds (with the job's recorded audio, videos and options) or moves the job's folder
back into the inbox, to be picked up like any new drop: from ``error/``, or from the work
area when the job was refused at intake and never queued.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .filing import INPUT_DIR, JOB_LOG
from .names import unique_in_dir, windows_safe
from .publish import move_dir, remove_tree
from .states import ACTIVE_STATES, JobState
from .store import Store, StoreError


def cancel(store: Store, ref: str) -> str:
    job = store.request_cancel(store.find_job(ref).id)
    if job.state == JobState.RUNNING:
        return f"Job {job.id} ({job.name}): cancelling; the current video stops within seconds."
    return f"Job {job.id} ({job.name}): cancelled; the service moves it to {job.name!r} in the error folder."


def retry(store: Store, config: Config, ref: str) -> str:
    job = store.find_job(ref)
    if job.state in ACTIVE_STATES:
        raise StoreError(f"job {job.id} ({job.name}) is {job.state}; it does not need a retry")
    work = Path(job.work_dir)
    if (work / INPUT_DIR).is_dir() and job.audio is None:
        # Held, but refused at intake (its filing then failed, a disk was full): it has no audio,
        # videos or options to run with, so intake must look at it again, as at a first drop.
        target = _back_to_inbox(config, job.name, work / INPUT_DIR)
        remove_tree(work)
        store.set_note(job.id, f"Moved back to the inbox as {target.name!r} by lipsyncd retry.")
        return (f"Job {job.id} ({job.name}): it was never queued, so its folder was moved back to the inbox "
                f"as {target.name!r}; it runs as a new job.")
    if (work / INPUT_DIR).is_dir():
        store.requeue(job.id, "Retried (lipsyncd retry)")
        return f"Job {job.id} ({job.name}): queued again."
    if job.error_path and Path(job.error_path).is_dir():
        source = Path(job.error_path)
        for generated in ("error.txt", JOB_LOG):
            (source / generated).unlink(missing_ok=True)
        target = _back_to_inbox(config, job.name, source)
        return f"Job {job.id} ({job.name}): moved back to the inbox as {target.name!r}; it runs as a new job."
    where = job.outbox_path or "nowhere the service can find"
    raise StoreError(f"job {job.id} ({job.name}) is {job.state} and its inputs are no longer held "
                     f"(results: {where}); drop the folder into the inbox again to run it again")


def _back_to_inbox(config: Config, name: str, source: Path) -> Path:
    """Move a job's folder into the inbox under a free name, to be taken like a new drop."""
    target = config.folders.inbox / unique_in_dir(config.folders.inbox, windows_safe(name))
    move_dir(source, target)
    return target
