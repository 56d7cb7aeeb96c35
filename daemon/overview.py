"""What is happening, with estimates: the ``status`` view's rows plus queue position, ETAs and
expected start times, for ``lipsyncd status``, the systemd STATUS line and the web dashboard.

Reads the database only; the arithmetic lives in :mod:`progress`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from . import progress as pr
from .states import JobState, TaskState
from .store import Store


def overview(store: Store, limit: int = 50, now: datetime | None = None) -> dict[str, Any]:
    """``{"now", "paused", "seconds_per_video", "counts", "jobs": [row, ...]}``. ``counts``: jobs per
    state over the whole table (``jobs`` shows at most ``limit``). Each row is a ``status`` view row plus
    ``queue_position`` (1 = next), ``video_eta_s``/``job_eta_s`` (counted down to ``now``),
    ``expected_finish`` and ``expected_start`` (ISO 8601, None when unknown)."""
    now = now or pr.utc_now()
    rows = store.status(limit)
    paused = store.paused
    per_video = pr.mean_seconds_per_video(store.video_seconds())
    running_left: float | None = 0.0
    busy = False
    for row in rows:
        row.update(queue_position=None, job_eta_s=None, expected_finish=None, expected_start=None)
        if row["state"] == JobState.RUNNING:
            busy = True
            row["video_eta_s"] = pr.remaining_now(row["video_eta_s"], pr.parse_db_time(row["progress_at"]), now)
            row["job_eta_s"] = _job_eta(store, row, now, per_video)
            running_left = row["job_eta_s"]
        elif row["state"] == JobState.FILING:
            busy = True
            row["job_eta_s"] = row["video_eta_s"] = 0.0
        if row["job_eta_s"] is not None:
            row["expected_finish"] = pr.iso(now + timedelta(seconds=row["job_eta_s"]))
    waiting = [row for row in rows if row["state"] == JobState.QUEUED]
    starts = pr.expected_starts(now, running_left, [_videos_left(row) for row in waiting], per_video, busy)
    for position, (row, start) in enumerate(zip(waiting, starts, strict=True), start=1):
        row["queue_position"] = position
        row["expected_start"] = None if paused else pr.iso(start)
    return {"now": pr.iso(now), "paused": paused, "seconds_per_video": per_video,
            "counts": store.count_by_state(), "jobs": rows}


def _job_eta(store: Store, row: dict[str, Any], now: datetime, per_video: float | None) -> float | None:
    tasks = store.tasks(row["id"])
    current = next((t for t in tasks if t.state == TaskState.RUNNING), None)
    after = sum(t.state == TaskState.QUEUED for t in tasks)
    finished = store.video_seconds(row["id"])
    if current is None:  # between two videos
        return pr.job_eta(0.0, 0.0, finished, after, per_video)
    if current.stage == "preview":  # every render is still to come, after this preview
        renders = pr.job_eta(0.0, 0.0, finished, after + 1, per_video)
        return None if renders is None else renders + (row["video_eta_s"] or 0.0)
    started = pr.parse_db_time(current.started_at)
    elapsed = max(0.0, (now - started).total_seconds()) if started else 0.0
    return pr.job_eta(row["video_eta_s"], elapsed, finished, after, per_video)


def _videos_left(row: dict[str, Any]) -> int:
    done, _, total = str(row["videos_done"]).partition("/")
    return max(0, int(total or 0) - int(done or 0))
