"""The job database: migrations, states, the status view, two writers at once."""

from __future__ import annotations

import sqlite3

import pytest
from lipsyncd.daemon import store as store_module
from lipsyncd.daemon.store import Store, StoreError


def queued(db: Store, name: str = "job", priority: int = 0) -> int:
    job = db.begin_intake(name, db.path.parent / ".processing")
    db.enqueue(job.id, audio="a.wav", videos=[("v.mp4", "v.mp4", None)], naming="{stem}.mp4", priority=priority,
               options={"crf": 18}, content_hash="h")
    return job.id


def test_schema_is_versioned_wal_and_readable_in_sqlite3(tmp_path):
    db = Store(tmp_path / "s.db")
    assert db.schema_version == len(store_module.MIGRATIONS)
    assert db.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"jobs", "tasks"} <= set(db.db.table_names()) and "status" in db.db.view_names()
    db.close()
    Store(tmp_path / "s.db").close()  # reopening migrates nothing twice


def test_a_later_migration_upgrades_an_existing_database_once(tmp_path, monkeypatch):
    db = Store(tmp_path / "s.db")
    job_id = queued(db)
    db.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS,
                                                     "ALTER TABLE jobs ADD COLUMN colour TEXT DEFAULT 'red';"))
    db = Store(tmp_path / "s.db")
    assert db.schema_version == len(store_module.MIGRATIONS)
    assert db.db.execute("SELECT name, colour FROM jobs WHERE id = ?", [job_id]).fetchone() == ("job", "red")
    db.close()
    Store(tmp_path / "s.db").close()  # applied once: a second ALTER would fail


def test_a_version_1_database_gains_the_video_hashes_and_keeps_its_tasks(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        db = Store(tmp_path / "s.db")
        job_id = db.db.execute("INSERT INTO jobs (name, state, work_dir) VALUES ('old', 'queued', 'w')").lastrowid
        db.db.execute("INSERT INTO tasks (job_id, position, video, output_name) VALUES (?, 0, 'v.mp4', 'v.mp4')",
                      [job_id])
        db.close()
    db = Store(tmp_path / "s.db")
    assert db.schema_version == len(store_module.MIGRATIONS) == 3
    (task,) = db.tasks(job_id)
    assert (task.video, task.video_sha256) == ("v.mp4", None)  # the engine then hashes the file itself
    db.close()


def test_a_newer_database_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="written by a newer lipsyncd"):
        Store(tmp_path / "s.db")


def test_each_state_transition(tmp_path):
    db = Store(tmp_path / "s.db")
    job_id = queued(db)
    assert db.job(job_id).state == "queued"
    assert db.claim(job_id) and not db.claim(job_id)
    task, = db.tasks(job_id)
    db.task_started(task.id)
    db.interrupt(job_id, "stopped")
    assert (db.job(job_id).state, db.tasks(job_id)[0].state) == ("queued", "queued")
    assert db.claim(job_id) and db.job(job_id).attempt == 2
    db.task_started(task.id)
    db.task_finished(task.id, "done")
    db.begin_filing(job_id, "done", None, tmp_path / "out", None)
    assert db.job(job_id).state == "filing"
    db.finish(job_id)
    job = db.job(job_id)
    assert (job.state, job.outbox_path) == ("done", str(tmp_path / "out")) and job.finished_at
    with pytest.raises(StoreError, match="already done; nothing to cancel"):
        db.request_cancel(job_id)


def test_claim_refuses_a_job_with_a_cancel_request(tmp_path):
    db = Store(tmp_path / "s.db")
    job_id = queued(db)
    db.request_cancel(job_id)
    assert not db.claim(job_id)


def test_status_view_orders_running_then_queued_by_priority_then_recent(tmp_path):
    db = Store(tmp_path / "s.db")
    old, _normal, _urgent, running = (queued(db, n, p) for n, p in
                                      (("old", 0), ("normal", 0), ("urgent", 9), ("running", 0)))
    db.claim(old)
    db.begin_filing(old, "failed", "broken", None, tmp_path / "err")
    db.finish(old)
    db.claim(running)
    assert [r["name"] for r in db.status()] == ["running", "urgent", "normal", "old"]
    assert db.status()[-1]["message"] == "broken"


def test_a_second_connection_writes_while_the_first_reads(tmp_path):
    a, b = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    job_id = queued(a)
    a.db.execute("BEGIN")
    a.db.execute("SELECT * FROM jobs").fetchall()
    b.request_cancel(job_id)  # WAL: a reader never blocks a writer
    a.db.execute("COMMIT")
    assert a.cancel_requested(job_id)


def test_a_version_2_database_gains_live_progress_and_settings(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:2])
        db = Store(tmp_path / "s.db")
        job_id = db.db.execute("INSERT INTO jobs (name, state, work_dir, created_at) "
                               "VALUES ('old', 'queued', 'w', '2026-03-01 14:05:09')").lastrowid
        db.close()
    db = Store(tmp_path / "s.db")
    assert db.schema_version == 3 and not db.paused
    (row,) = db.status()
    assert (row["id"], row["created_at"], row["stage"]) == (job_id, "2026-03-01T14:05:09+00:00", None)
    db.close()


def test_progress_is_stored_with_stage_speed_eta_and_time(tmp_path):
    db = Store(tmp_path / "s.db")
    job_id = queued(db)
    db.claim(job_id)
    (task,) = db.tasks(job_id)
    db.task_started(task.id)
    db.task_progress(task.id, 30, 120, "render", 7.5, 12.0)
    (row,) = db.status()
    assert (row["stage"], row["frames_done"], row["frames_total"], row["fps"], row["video_eta_s"]) == \
        ("render", 30, 120, 7.5, 12.0)
    assert row["percent"] == 25.0 and row["progress_at"].endswith("+00:00")
    db.interrupt(job_id, "stopped")
    (task,) = db.tasks(job_id)
    assert (task.stage, task.fps, task.eta_s, task.progress_at) == (None, None, None, None)
    db.close()


def test_moving_a_job_changes_the_order_the_runner_takes(tmp_path):
    db = Store(tmp_path / "s.db")
    a, b, c = queued(db, "a"), queued(db, "b"), queued(db, "c", priority=5)
    assert [j.name for j in db.jobs_in("queued")] == ["c", "a", "b"]
    db.move(b, 2)  # to the front: it takes c's place, priority included
    assert [j.name for j in db.jobs_in("queued")] == ["b", "c", "a"]
    assert [r["name"] for r in db.status()] == ["b", "c", "a"]
    db.move(b, -1)
    assert [j.name for j in db.jobs_in("queued")] == ["c", "b", "a"]
    db.move(a, 5)  # past the front: stays first
    assert [j.name for j in db.jobs_in("queued")] == ["a", "c", "b"]
    d = queued(db, "d")  # a new drop still goes behind its priority's waiting jobs
    assert [j.name for j in db.jobs_in("queued")][-1] == "d"
    db.claim(c)
    with pytest.raises(StoreError, match="only waiting jobs can be moved"):
        db.move(c, 1)
    assert d
    db.close()


def test_the_pause_flag_is_persisted(tmp_path):
    db = Store(tmp_path / "s.db")
    db.set_paused(True)
    db.close()
    db = Store(tmp_path / "s.db")
    assert db.paused
    db.set_paused(False)
    assert not db.paused
    db.close()


def test_history_filters_by_state_name_and_day(tmp_path):
    db = Store(tmp_path / "s.db")
    for name, state, day in [("Interview A", "done", "2026-03-01"), ("interview b", "failed", "2026-03-02"),
                             ("Promo", "done", "2026-03-03"), ("waiting", "queued", "2026-03-03")]:
        db.db.execute("INSERT INTO jobs (name, state, work_dir, created_at) VALUES (?, ?, 'w', ?)",
                      [name, state, f"{day} 10:00:00"])
    assert [j.name for j in db.history()] == ["Promo", "interview b", "Interview A"]
    assert [j.name for j in db.history(name="INTERVIEW")] == ["interview b", "Interview A"]
    assert [j.name for j in db.history(states=("failed",))] == ["interview b"]
    assert [j.name for j in db.history(since="2026-03-02", until="2026-03-02")] == ["interview b"]
    db.close()
