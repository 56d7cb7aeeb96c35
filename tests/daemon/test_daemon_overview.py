"""The overview the CLI, the STATUS line, the dashboard and the share's status files show."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from lipsyncd.daemon import slot_status
from lipsyncd.daemon.executor import SlotState
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


NOW = datetime(2026, 3, 1, 10, 1, 0, tzinfo=timezone.utc)


def rendering(store: Store, task_id: int, started: str, eta_s: float, fps: float = 5.0) -> None:
    """A video rendering since ``started`` whose ETA, written at NOW, is ``eta_s``."""
    store.task_started(task_id)
    store.task_progress(task_id, 10, 100, "render", fps, eta_s)
    store.db.execute("UPDATE tasks SET started_at = ?, progress_at = '2026-03-01 10:01:00' WHERE id = ?",
                     [started, task_id])


def a_queue_behind_a_running_job(store: Store) -> int:
    """Videos take 60 s (history); the running job has 4 videos, the first rendering for 40 s
    with 20 s left; then 'next' (3 videos) and 'last' (1) wait."""
    old = queued(store, "earlier", 1)
    store.db.execute("UPDATE tasks SET state = 'done', started_at = '2026-03-01 09:00:00', "
                     "finished_at = '2026-03-01 09:01:00' WHERE job_id = ?", [old])
    store.db.execute("UPDATE jobs SET state = 'done' WHERE id = ?", [old])
    job = queued(store, "now", 4)
    queued(store, "next", 3)
    queued(store, "last", 1)
    store.claim(job)
    rendering(store, store.tasks(job)[0].id, "2026-03-01 10:00:20", 20.0)
    return job


def starts(view: dict) -> dict[str, float | None]:
    def seconds(row: dict) -> float | None:
        moment = row["expected_start"] or row["expected_finish"]
        return (datetime.fromisoformat(moment) - NOW).total_seconds() if moment else None
    return {r["name"]: seconds(r) for r in view["jobs"] if r["state"] in ("running", "queued")}


def test_expected_starts_model_every_slot_working_in_parallel(store):
    a_queue_behind_a_running_job(store)
    # one slot: 20 s + 3 × 60 s for the running job, then 'next' takes 3 × 60 s
    assert starts(overview(store, now=NOW, slots=1)) == {"now": 200.0, "next": 200.0, "last": 380.0}
    # two slots: the idle one takes video 2 now, video 3 goes where video 1 ends (20 + 60),
    # video 4 to the first free (60 + 60); 'next' spreads 3 videos over both: two rounds of 60 s
    assert starts(overview(store, now=NOW, slots=2)) == {"now": 120.0, "next": 120.0, "last": 240.0}
    view = overview(store, now=NOW, slots=4)
    assert view["slot_count"] == 4 and starts(view) == {"now": 60.0, "next": 60.0, "last": 120.0}


def test_a_job_rendering_on_two_slots_is_one_row_naming_both_videos(store):
    job = a_queue_behind_a_running_job(store)
    second = store.tasks(job)[1]
    rendering(store, second.id, "2026-03-01 10:00:50", 50.0, fps=4.0)  # 10 s in, 50 s left
    rows = [r for r in overview(store, now=NOW, slots=2)["jobs"] if r["id"] == job]
    assert len(rows) == 1
    row = rows[0]
    assert row["current_video"] == "0.mp4, 1.mp4" and (row["frames_done"], row["frames_total"]) == (20, 200)
    assert row["fps"] == pytest.approx(9.0) and row["video_eta_s"] == 50.0  # until the last of them ends
    assert row["job_eta_s"] == 50.0 + 60.0  # videos 3 and 4 follow on the slots freed at 20 s and 50 s


def test_the_estimates_count_the_slots_shown_else_those_the_config_plans(cfg):
    cpu = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, device="cpu", cpu_workers=3))
    assert slot_status.capacity(cpu) == 3  # before the runner has shown any slot
    slot_status.write(cfg.folders.state, [SlotState("gpu0", "render1"), SlotState("gpu1", "render1")])
    assert slot_status.capacity(cpu) == 2  # what the runner actually opened
    slot_status.clear(cfg.folders.state)
    ray = dataclasses.replace(cfg, executor=dataclasses.replace(cfg.executor, kind="ray"))
    assert slot_status.capacity(ray) == 1  # a cluster's size is unknown until it is reached
