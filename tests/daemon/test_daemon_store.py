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
        job = db.begin_intake("old", tmp_path / ".processing")
        db.db.execute("INSERT INTO tasks (job_id, position, video, output_name) VALUES (?, 0, 'v.mp4', 'v.mp4')",
                      [job.id])
        db.close()
    db = Store(tmp_path / "s.db")
    assert db.schema_version == len(store_module.MIGRATIONS) == 2
    (task,) = db.tasks(job.id)
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
