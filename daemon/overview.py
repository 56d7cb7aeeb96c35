"""What is happening, with estimates: the ``status`` view's rows plus queue position, ETAs and
expected start times, for ``lipsyncd status``, the systemd STATUS line and the web dashboard.

Reads the database only; the arithmetic lives in :mod:`progress`. The caller says how many
render slots there are (:func:`~.slot_status.capacity`): the running job's videos and every
waiting job's are spread over that many.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from . import progress as pr
from .states import JobState, TaskState
from .store import Store, Task


def overview(store: Store, limit: int = 50, now: datetime | None = None, slots: int = 1) -> dict[str, Any]:
    """``{"now", "paused", "seconds_per_video", "slot_count", "counts", "jobs": [row, ...]}``. ``counts``: jobs
    per state over the whole table (``jobs`` shows at most ``limit``). Each row is a ``status`` view row
    (one per job: with several videos rendering at once, ``current_video`` names them all, their
    frames and fps are summed and ``video_eta_s`` is when the last of them ends) plus
    ``queue_position`` (1 = next), ``video_eta_s``/``job_eta_s`` (counted down to ``now``),
    ``expected_finish`` and ``expected_start`` (ISO 8601, None when unknown)."""
    now = now or pr.utc_now()
    slots = max(1, slots)
    rows = _one_row_per_job(store.status(limit))
    paused = store.paused
    per_video = pr.mean_seconds_per_video(store.video_seconds())
    running_left: float | None = 0.0
    busy = False
    for row in rows:
        row.update(queue_position=None, job_eta_s=None, expected_finish=None, expected_start=None)
        if row["state"] == JobState.RUNNING:
            busy = True
            row["job_eta_s"] = _running_job(store, row, now, per_video, slots)
            running_left = row["job_eta_s"]
        elif row["state"] == JobState.FILING:
            busy = True
            row["job_eta_s"] = row["video_eta_s"] = 0.0
        if row["job_eta_s"] is not None:
            row["expected_finish"] = pr.iso(now + timedelta(seconds=row["job_eta_s"]))
    waiting = [row for row in rows if row["state"] == JobState.QUEUED]
    starts = pr.expected_starts(now, running_left, [_videos_left(row) for row in waiting], per_video, busy, slots)
    for position, (row, start) in enumerate(zip(waiting, starts, strict=True), start=1):
        row["queue_position"] = position
        row["expected_start"] = None if paused else pr.iso(start)
    return {"now": pr.iso(now), "paused": paused, "seconds_per_video": per_video, "slot_count": slots,
            "counts": store.count_by_state(), "jobs": rows}


def _one_row_per_job(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The view has a row per running video; a job with several on the slots is shown once."""
    by_job: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_job.setdefault(row["id"], row)
    return list(by_job.values())


def _running_job(store: Store, row: dict[str, Any], now: datetime, per_video: float | None,
                 slots: int) -> float | None:
    """Fill the row's video columns from every video running now; the job's ETA."""
    tasks = store.tasks(row["id"])
    current = [t for t in tasks if t.state == TaskState.RUNNING]
    videos = [_running_video(t, now) for t in current]
    after = sum(t.state == TaskState.QUEUED for t in tasks)
    finished = store.video_seconds(row["id"])
    if current:
        etas = [v.eta_s for v in videos]
        row.update(current_video=", ".join(t.video for t in current), stage=current[0].stage,
                   frames_done=_sum(t.frames_done for t in current), frames_total=_sum(t.frames_total for t in current),
                   fps=_sum(round(t.fps, 2) if t.fps is not None else None for t in current),
                   video_eta_s=None if None in etas else max(e for e in etas if e is not None),
                   progress_at=pr.iso(max(t.progress_at or "" for t in current) or None))
    if any(t.stage == "preview" for t in current):  # previews come first, in the service: every render follows
        renders = pr.job_eta([], finished, after + len(current), per_video, slots)
        return None if renders is None else renders + (row["video_eta_s"] or 0.0)
    return pr.job_eta(videos, finished, after, per_video, slots)


def _running_video(task: Task, now: datetime) -> pr.RunningVideo:
    """A running video's ETA as last written (rounded to the second, as the view shows it),
    counted down to ``now``, and how long it has run."""
    eta = float(round(task.eta_s)) if task.eta_s is not None else None
    started = pr.parse_db_time(task.started_at)
    return pr.RunningVideo(pr.remaining_now(eta, pr.parse_db_time(task.progress_at), now),
                           max(0.0, (now - started).total_seconds()) if started else 0.0)


def _sum(values: Iterable[Any]) -> Any:
    """The sum of the known values; None when none is known."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _videos_left(row: dict[str, Any]) -> int:
    done, _, total = str(row["videos_done"]).partition("/")
    return max(0, int(total or 0) - int(done or 0))
