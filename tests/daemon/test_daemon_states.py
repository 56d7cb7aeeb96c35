"""Job and task states are declared once (daemon/states.py); the database, the rows read back and the
status line all agree with that declaration."""

from __future__ import annotations

import re

from lipsyncd.daemon.overview import overview
from lipsyncd.daemon.service import _status_line
from lipsyncd.daemon.states import ACTIVE_STATES, FINAL_STATES, JobState, TaskState
from lipsyncd.daemon.store import Store


def checked_values(db: Store, table: str) -> set[str]:
    """The values the table's CHECK constraint on ``state`` allows (the frozen migration's list)."""
    sql = db.db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone()[0]
    allowed = re.search(r"CHECK \(state IN\s*\(([^)]*)\)\)", sql)
    assert allowed, sql
    return set(re.findall(r"'(\w+)'", allowed.group(1)))


def test_the_schema_allows_exactly_the_declared_states(tmp_path):
    db = Store(tmp_path / "s.db")
    assert checked_values(db, "jobs") == set(JobState)
    assert checked_values(db, "tasks") == set(TaskState)
    assert set(FINAL_STATES) | set(ACTIVE_STATES) == set(JobState) and not set(FINAL_STATES) & set(ACTIVE_STATES)


def test_rows_read_back_carry_the_enum_and_still_equal_their_text(tmp_path):
    db = Store(tmp_path / "s.db")
    job = db.begin_intake("talk", tmp_path / ".processing")
    db.enqueue(job.id, audio="a.wav", videos=[("v.mp4", "v.mp4", None)], naming="{stem}.mp4", priority=0,
               options={}, content_hash="h")
    job, (task,) = db.job(job.id), db.tasks(job.id)
    assert job.state is JobState.QUEUED and job.state == "queued" and f"{job.state}" == "queued"
    assert task.state is TaskState.QUEUED
    assert db.db.execute("SELECT typeof(state), state FROM jobs").fetchone() == ("text", "queued")


def test_the_status_line_counts_every_queued_job_not_only_those_shown(tmp_path):
    db = Store(tmp_path / "s.db")
    for n in range(25):
        job = db.begin_intake(f"job {n}", tmp_path / ".processing")
        db.enqueue(job.id, audio="a.wav", videos=[("v.mp4", "v.mp4", None)], naming="{stem}.mp4", priority=0,
                   options={}, content_hash=f"h{n}")
    view = overview(db, limit=20)
    assert len(view["jobs"]) == 20
    assert _status_line(view) == "Idle; 25 queued"
