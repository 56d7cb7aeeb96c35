"""What ``lipsyncd retry`` and ``lipsyncd cancel`` do, as functions the CLI and tests call.

Both work on the database and the folders only, so they work whether or not the service is
running: a cancel is a flag the runner reads, a retry either re-queues inputs the service
still holds or moves the job's folder from ``error/`` back into the inbox, to be picked up
like any new drop.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .filing import move_dir
from .names import unique_in_dir, windows_safe
from .results import INPUT_DIR, JOB_LOG
from .store import ACTIVE_STATES, Store, StoreError


def cancel(store: Store, ref: str) -> str:
    job = store.request_cancel(store.find_job(ref).id)
    if job.state == "running":
        return f"Job {job.id} ({job.name}): cancelling; the current video stops within seconds."
    return f"Job {job.id} ({job.name}): cancelled; the service moves it to {job.name!r} in the error folder."


def retry(store: Store, config: Config, ref: str) -> str:
    job = store.find_job(ref)
    if job.state in ACTIVE_STATES:
        raise StoreError(f"job {job.id} ({job.name}) is {job.state}; it does not need a retry")
    if (Path(job.work_dir) / INPUT_DIR).is_dir():
        store.requeue(job.id, "Retried (lipsyncd retry).")
        return f"Job {job.id} ({job.name}): queued again."
    if job.error_path and Path(job.error_path).is_dir():
        source = Path(job.error_path)
        for generated in ("error.txt", JOB_LOG):
            (source / generated).unlink(missing_ok=True)
        target = config.folders.inbox / unique_in_dir(config.folders.inbox, windows_safe(job.name))
        move_dir(source, target)
        return f"Job {job.id} ({job.name}): moved back to the inbox as {target.name!r}; it runs as a new job."
    where = job.outbox_path or "nowhere the service can find"
    raise StoreError(f"job {job.id} ({job.name}) is {job.state} and its inputs are no longer held "
                     f"(results: {where}); drop the folder into the inbox again to run it again")
