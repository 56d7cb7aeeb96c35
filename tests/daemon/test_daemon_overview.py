"""The overview the CLI, the STATUS line, the dashboard and the share's status files show."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from lipsyncd.daemon.overview import overview
from lipsyncd.daemon.progress import iso
from lipsyncd.daemon.store import Store


def queued(store: Store, name: str, videos: int) -> int:
    job = store.begin_intake(name, store.path.parent / ".processing")
    store.enqueue(job.id, audio="s.wav", videos=[(f"{i}.mp4", f"{i}.mp4", None) for i in range(videos)],
                  naming="{stem}.mp4", priority=0, options={}, content_hash=name)
    return job.id


def test_during_the_previews_the_job_eta_counts_every_render_still_to_come(store):
    old = queued(store, "earlier", 1)  # history: a video took 30 s
    store.db.execute("UPDATE tasks SET state = 'done', started_at = '2026-03-01 10:00:00', "
                     "finished_at = '2026-03-01 10:00:30' WHERE job_id = ?", [old])
    store.db.execute("UPDATE jobs SET state = 'done' WHERE id = ?", [old])
    job = queued(store, "now", 3)
    later = queued(store, "later", 2)
    store.claim(job)
    first = store.tasks(job)[0]
    store.task_started(first.id)
    store.task_progress(first.id, 10, 50, "preview", 20.0, 2.0)
    written = store.tasks(job)[0].progress_at
    now = datetime.fromisoformat(written).replace(tzinfo=timezone.utc)
    rows = {r["name"]: r for r in overview(store, now=now)["jobs"]}
    assert rows["now"]["stage"] == "preview"
    assert rows["now"]["job_eta_s"] == pytest.approx(2.0 + 3 * 30.0)
    assert rows["later"]["queue_position"] == 1
    assert rows["later"]["expected_start"] == iso(now + timedelta(seconds=92))
    store.set_paused(True)
    view = overview(store, now=now)
    assert view["paused"] and {r["name"]: r for r in view["jobs"]}["later"]["expected_start"] is None
    assert later
