"""What ``lipsyncd retry`` and ``lipsyncd cancel`` and the dashboard's "Preview" do, as functions
the CLI, the dashboard and tests call.

They work on the database and the folders only, so they work whether or not the service is
running: a cancel is a flag the runner reads, a retry either re-queues inputs the service
still holds (with the job's recorded audio, videos and options) or moves the job's folder
back into the inbox, to be picked up like any new drop: from ``error/``, or from the work
area when the job was refused at intake and never queued. A preview ordered for a waiting job
is a setting the runner reads when it starts the job; one ordered for a finished job is a new
job folder in the inbox, made from the kept inputs, so the finished job stays as it is.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .config import Config
from .filing import INPUT_DIR, JOB_LOG, PREVIEW_DIR
from .job_places import input_files
from .jobfolder import JOB_FILES, PREVIEW_SECONDS_RANGE, is_junk
from .names import readable, unique_in_dir, windows_safe
from .publish import Entry, move_dir, publish_dir, remove_tree
from .states import ACTIVE_STATES, FINAL_STATES, JobState
from .store import Job, Store, StoreError

PREVIEW_SUFFIX = " (preview)"
"""Added to a finished job's name for the preview-only job ordered from it."""


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


def preview(store: Store, config: Config, ref: str, seconds: float) -> str:
    """Render the first ``seconds`` of every video of a job as a preview clip. A waiting job makes
    its clips before its full renders (job.yaml ``preview_seconds``). A finished job whose inputs
    are still kept is not touched: a preview-only job (``<name> (preview)``) is made from them,
    with the settings the job ran with, and goes through the inbox like any drop."""
    low, high = PREVIEW_SECONDS_RANGE
    if not low <= seconds <= high:
        raise StoreError(f"a preview clip is {low} to {high} seconds long; got {seconds:g}")
    job = store.find_job(ref)
    if job.state == JobState.QUEUED:
        return _clip_before_renders(store, job, seconds)
    if job.state not in FINAL_STATES:
        raise StoreError(f"job {job.id} ({job.name}) is {job.state}; a preview clip can be ordered while it waits "
                         "in the queue or once it has finished")
    return _preview_only_copy(store, config, job, seconds)


def _clip_before_renders(store: Store, job: Job, seconds: float) -> str:
    if not store.set_preview_seconds(job.id, float(seconds)):
        raise StoreError(f"job {job.id} ({job.name}) has just started; order the preview clip once it has finished")
    if job.preview_seconds not in (None, seconds):  # clips of another length, from an interrupted attempt
        for clip in (Path(job.work_dir) / PREVIEW_DIR).glob("*-preview.mp4"):
            clip.unlink(missing_ok=True)
    return (f"Job {job.id} ({job.name}): the first {seconds:g} s of each video are rendered as a preview clip "
            "before the full renders.")


def _preview_only_copy(store: Store, config: Config, job: Job, seconds: float) -> str:
    """A new job folder in the inbox: hard links to (or copies of) the job's kept inputs and a
    job.yaml with its recorded settings plus ``preview_only``; built hidden, renamed in at once."""
    if job.audio is None:
        raise StoreError(f"job {job.id} ({job.name}) was never queued (refused at intake, or skipped as a repeat), "
                         "so it has no videos to preview; drop its folder into the inbox again with "
                         "preview_seconds in its job.yaml, or order the preview from the job it repeats")
    kept: dict[str, Path] = {}
    for f in input_files(job):
        kept.setdefault(f.dropped, f.path)
    names = {readable(rel): rel for rel in kept}
    videos = [t.video for t in store.tasks(job.id)]
    missing = [n for n in (job.audio, *videos) if n not in names]
    if missing:
        raise StoreError(f"job {job.id} ({job.name}): its input {missing[0]} is no longer kept (jobs.keep_inputs, "
                         "clean-up, or moved), so no preview can be made from it; drop the folder into the inbox "
                         "again with preview_seconds in its job.yaml")
    media_root = _folder_of(names[job.audio])
    entries = [Entry(rel, source=path) for rel, path in kept.items()
               if not is_junk(rel, config.watch.ignore) and not _job_file(rel, media_root)]
    job_yaml = str(PurePosixPath(media_root, "job.yaml"))
    entries.append(Entry(job_yaml, text=yaml.safe_dump(_settings(job, videos, seconds), allow_unicode=True,
                                                        sort_keys=False)))
    inbox = config.folders.inbox
    name = unique_in_dir(inbox, windows_safe(f"{job.name}{PREVIEW_SUFFIX}", fallback=f"job {job.id} preview"))
    try:
        publish_dir(entries, inbox / name)
    except OSError as exc:
        raise StoreError(f"the preview job could not be put into the inbox {inbox}: {exc.strerror or exc}") from None
    return (f"Job {job.id} ({job.name}): {name!r} renders the first {seconds:g} s of its videos as a preview, "
            "from the same inputs and settings; it joins the queue within seconds. This job's results stay "
            "where they are.")


def _job_file(rel: str, media_root: str) -> bool:
    """Is ``rel`` a job.yaml the job was dropped with (beside its media, or above them)?"""
    return PurePosixPath(rel).name.lower() in JOB_FILES and _folder_of(rel) in ("", media_root)


def _folder_of(rel: str) -> str:
    """The folder part of a relative path; "" for the job folder itself."""
    parent = str(PurePosixPath(rel).parent)
    return "" if parent == "." else parent


def _settings(job: Job, videos: list[str], seconds: float) -> dict[str, Any]:
    """job.yaml for a preview of ``job``: what it ran with, so the clips look like its renders
    (with ``{job}`` in the output names kept as the job's own name)."""
    name = job.name.replace("{", "{{").replace("}", "}}")
    return {"audio": job.audio, "videos": videos,
            "output": (job.naming or "{stem}.mp4").replace("{job}", name), "priority": job.priority,
            "preview_only": True, "preview_seconds": seconds, "engine": job.option_values}


def _back_to_inbox(config: Config, name: str, source: Path) -> Path:
    """Move a job's folder into the inbox under a free name, to be taken like a new drop."""
    target = config.folders.inbox / unique_in_dir(config.folders.inbox, windows_safe(name))
    move_dir(source, target)
    return target
