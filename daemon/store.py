"""The job database: SQLite on local disk, the only place that changes a job's or a task's state.

Tables are meant to be read by a person in ``sqlite3``: ``jobs`` (one row per dropped folder),
``tasks`` (one row per video of a job) and the ``status`` view, which answers "what is
happening" in one query (``SELECT * FROM status``). Times are UTC, ``YYYY-MM-DD HH:MM:SS``.

Job and task states are declared in :mod:`states` (with the diagram of how a job moves).

``intake`` and ``filing`` are short, crash-recoverable steps around moving files: a row in
``intake`` names a folder being claimed from the inbox, a row in ``filing`` records where its
results are being published, so a restart finishes either step instead of losing or
duplicating anything. The schema is versioned with ``PRAGMA user_version``; each migration
runs once, in a transaction.

A job's ``note`` says what an active job waits for or what last happened to it (a missing model,
an interrupted attempt, "same as job #3"); it is cleared when the job starts running and when
it is filed, so it never goes stale. A finished task's ``error`` is why it failed or, for a
``done`` task, a warning about its result (few frames with a face).

Each thread and each process opens its own :class:`Store`; WAL and a busy timeout let the
service and a ``lipsyncd cancel`` in another shell write without "database is locked".

sqlite-utils (4.0 or later) gives rows as dicts (``db.query``) and nested transactions
(``db.atomic``, new in 4.0); the statements themselves are SQL on purpose. The schema needs what its
table builder does not express (``CHECK`` constraints on states, defaults that are SQL
expressions, a view) and is versioned with ``user_version``, one transaction per migration, in
files that already exist. Every state change is a guarded ``UPDATE ... WHERE state = ?`` whose
row count says whether this writer won (two threads never both claim or file a job), which an
upsert cannot say; the settings upsert stamps ``updated_at`` in the same statement.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlite_utils

from .states import FINAL_STATES, JobState, TaskState

BUSY_TIMEOUT_S = 15.0
JOB_SETTINGS = ("preview_only", "preview_seconds")
"""job.yaml's top-level settings that change what the runner does, stored in the ``options``
JSON beside the engine options (no column of their own: the engine never sees them)."""
QUEUE_ORDER = "priority DESC, coalesce(queue_rank, id), id"
"""The order the runner takes queued jobs in: higher priority first, then queue rank (its id
unless someone moved it)."""
PAUSED = "paused"
"""Settings key of the queue's pause flag ('1' paused)."""

_NOW = "strftime('%Y-%m-%d %H:%M:%S', 'now')"
HAD_FAILED = " The job had failed because: "
"""Joins a filing problem and the reason the job had failed (see :meth:`Store.filing_failed`)."""
_NO_PROGRESS = ("progress = 0, frames_done = NULL, frames_total = NULL, stage = NULL, fps = NULL, eta_s = NULL, "
                "progress_at = NULL")
"""A task about to run (again) shows nothing of an earlier attempt's progress, speed or ETA."""


def _iso(column: str) -> str:
    """SQL turning a stored UTC time into ISO 8601 with its zone (``2026-03-01T14:05:09+00:00``)."""
    return f"replace({column}, ' ', 'T') || '+00:00'"


MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY,
        name             TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN
                           ('intake', 'queued', 'running', 'filing', 'done', 'failed', 'cancelled', 'skipped')),
        priority         INTEGER NOT NULL DEFAULT 0,
        attempt          INTEGER NOT NULL DEFAULT 0,
        created_at       TEXT NOT NULL DEFAULT ({_NOW}),
        started_at       TEXT,
        finished_at      TEXT,
        updated_at       TEXT NOT NULL DEFAULT ({_NOW}),
        error            TEXT,
        note             TEXT,
        work_dir         TEXT NOT NULL,
        audio            TEXT,
        naming           TEXT,
        options          TEXT,
        content_hash     TEXT,
        outcome          TEXT,
        outbox_path      TEXT,
        error_path       TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state ON jobs (state, priority, id);
    CREATE INDEX jobs_hash ON jobs (content_hash);
    CREATE TABLE tasks (
        id           INTEGER PRIMARY KEY,
        job_id       INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        position     INTEGER NOT NULL,
        video        TEXT NOT NULL,
        output_name  TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'queued'
                       CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        progress     REAL NOT NULL DEFAULT 0,
        frames_done  INTEGER,
        frames_total INTEGER,
        attempt      INTEGER NOT NULL DEFAULT 0,
        started_at   TEXT,
        finished_at  TEXT,
        error        TEXT,
        output_path  TEXT,
        UNIQUE (job_id, position)
    );
    CREATE VIEW status AS
    SELECT j.id, j.name, j.state,
           (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.state = 'done') || '/' ||
           (SELECT count(*) FROM tasks t WHERE t.job_id = j.id) AS videos_done,
           round(100 * coalesce((SELECT avg(t.progress) FROM tasks t WHERE t.job_id = j.id), 0), 1) AS percent,
           (SELECT t.video FROM tasks t WHERE t.job_id = j.id AND t.state = 'running') AS current_video,
           j.priority, j.attempt, j.created_at, j.started_at, j.finished_at,
           coalesce(j.error, j.note) AS message,
           coalesce(j.outbox_path, j.error_path) AS result
    FROM jobs j
    ORDER BY CASE j.state WHEN 'running' THEN 0 WHEN 'filing' THEN 0 WHEN 'intake' THEN 1
                          WHEN 'queued' THEN 1 ELSE 2 END,
             CASE WHEN j.state IN ('queued', 'intake') THEN -j.priority ELSE 0 END,
             CASE WHEN j.state IN ('queued', 'intake') THEN j.id ELSE -j.id END;
    """,
    # 2: each video's sha256, read once at intake and handed to the engine (face-track cache key)
    """
    ALTER TABLE tasks ADD COLUMN video_sha256 TEXT;
    """,
    # 3: live progress (stage, speed, ETA and when they were written), a queue order people can
    # change (queue_rank; NULL: by id), whether a finished job's notifications went out (jobs
    # finished before the upgrade count as notified), and service-wide settings such as the pause flag
    f"""
    ALTER TABLE tasks ADD COLUMN stage TEXT;
    ALTER TABLE tasks ADD COLUMN fps REAL;
    ALTER TABLE tasks ADD COLUMN eta_s REAL;
    ALTER TABLE tasks ADD COLUMN progress_at TEXT;
    ALTER TABLE jobs ADD COLUMN queue_rank INTEGER;
    ALTER TABLE jobs ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET notified = 1 WHERE state IN ('done', 'failed', 'cancelled', 'skipped');
    CREATE TABLE settings (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT ({_NOW})
    );
    DROP VIEW status;
    CREATE VIEW status AS
    SELECT j.id, j.name, j.state,
           (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.state = 'done') || '/' ||
           (SELECT count(*) FROM tasks t WHERE t.job_id = j.id) AS videos_done,
           round(100 * coalesce((SELECT avg(t.progress) FROM tasks t WHERE t.job_id = j.id), 0), 1) AS percent,
           r.video AS current_video,
           CASE WHEN j.state = 'filing' THEN 'filing' WHEN j.state = 'running' THEN r.stage END AS stage,
           r.frames_done, r.frames_total, round(r.fps, 2) AS fps, round(r.eta_s) AS video_eta_s,
           j.priority, j.attempt,
           {_iso("j.created_at")} AS created_at, {_iso("j.started_at")} AS started_at,
           {_iso("j.finished_at")} AS finished_at, {_iso("r.progress_at")} AS progress_at,
           coalesce(j.error, j.note) AS message,
           coalesce(j.outbox_path, j.error_path) AS result
    FROM jobs j LEFT JOIN tasks r ON r.job_id = j.id AND r.state = 'running'
    ORDER BY CASE j.state WHEN 'running' THEN 0 WHEN 'filing' THEN 0 WHEN 'intake' THEN 1
                          WHEN 'queued' THEN 1 ELSE 2 END,
             CASE WHEN j.state IN ('queued', 'intake') THEN -j.priority ELSE 0 END,
             CASE WHEN j.state IN ('queued', 'intake') THEN coalesce(j.queue_rank, j.id) ELSE -j.id END;
    """,
)


class StoreError(RuntimeError):
    """The database cannot be used (newer schema, damaged, read-only, unknown job)."""


class NoDatabase(StoreError):
    """A command that only reads found no database (the service has not run yet)."""


def unusable(path: Path, exc: BaseException) -> StoreError:
    """One line for a database file that cannot be used: what, where, what to do."""
    reason = " ".join(str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc).split())
    if path.is_dir():
        return StoreError(f"the database {path} is a folder, not a file; move it away or set folders.state "
                          "to another folder")
    if _read_only(path, exc, reason):
        return StoreError(f"the database {path} cannot be written ({reason}); give the service's user write "
                          f"access to it and to {path.parent} (chown, chmod u+w, chattr -i, or remount "
                          "read-write), then start again")
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in reason or "malformed" in reason
                                                   or "corrupt" in reason):
        return damaged(path, reason)
    return StoreError(f"the database {path} cannot be opened ({reason}); lipsyncd doctor checks the state folder")


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    state: JobState
    priority: int
    attempt: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    error: str | None
    note: str | None
    work_dir: str
    audio: str | None
    naming: str | None
    options: str | None
    content_hash: str | None
    outcome: JobState | None
    outbox_path: str | None
    error_path: str | None
    cancel_requested: int
    queue_rank: int | None
    notified: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        outcome = row["outcome"]
        return cls(**_columns(cls, row) | {"state": JobState(row["state"]),
                                          "outcome": JobState(outcome) if outcome is not None else None})

    @property
    def option_values(self) -> dict[str, Any]:
        """The engine options (the ``options`` column without the job settings)."""
        stored = json.loads(self.options) if self.options else {}
        return {k: v for k, v in stored.items() if k not in JOB_SETTINGS}

    @property
    def settings(self) -> dict[str, Any]:
        """The job settings kept beside the engine options (:data:`JOB_SETTINGS`), as set."""
        stored = json.loads(self.options) if self.options else {}
        return {k: v for k, v in stored.items() if k in JOB_SETTINGS}

    @property
    def preview_only(self) -> bool:
        return bool(self.settings.get("preview_only"))

    @property
    def preview_seconds(self) -> float | None:
        return self.settings.get("preview_seconds")


@dataclass(frozen=True)
class Task:
    id: int
    job_id: int
    position: int
    video: str
    output_name: str
    state: TaskState
    progress: float
    frames_done: int | None
    frames_total: int | None
    attempt: int
    started_at: str | None
    finished_at: str | None
    error: str | None
    output_path: str | None
    video_sha256: str | None
    stage: str | None
    fps: float | None
    eta_s: float | None
    progress_at: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        return cls(**_columns(cls, row) | {"state": TaskState(row["state"])})


def _columns(cls: type, row: dict[str, Any]) -> dict[str, Any]:
    """The row's values of the dataclass's fields (a row may have more columns than it knows)."""
    return {f.name: row[f.name] for f in fields(cls)}


class Store:
    """One connection to the job database; open one per thread or process.

    ``readonly`` is for commands that only look (``status``, ``doctor``): the file is opened
    without creating it, its folder, or (when no service has it open) its ``-wal``/``-shm``
    companions, so running them as root never leaves root-owned files the service cannot
    write. ``create=False`` opens an existing database for writing (``retry``, ``cancel``).
    Every way the file can be unusable is a :class:`StoreError` of one line.
    """

    def __init__(self, path: Path, *, readonly: bool = False, create: bool = True) -> None:
        self.path = path
        self.readonly = readonly
        if (readonly or not create) and not path.exists():
            raise NoDatabase(f"no database at {path}: the service has not run yet with this config")
        conn: sqlite3.Connection | None = None
        try:
            if readonly:
                conn = _connect_readonly(path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self.db = sqlite_utils.Database(conn)
            if readonly:
                self._check_version()
                return
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._probe_write()
        except (sqlite3.Error, OSError, StoreError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, StoreError):
                raise
            raise unusable(path, exc) from None

    def close(self) -> None:
        self.db.close()

    def check_integrity(self) -> None:
        """SQLite's quick check of every page (milliseconds for a job table); the service runs
        it at start so that a damaged file stops it with one line instead of failing later."""
        try:
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check")]
        except sqlite3.Error as exc:
            raise unusable(self.path, exc) from None
        if problems != ["ok"]:
            raise damaged(self.path, " ".join(problems[:3]))

    def _probe_write(self) -> None:
        """Fail now, not at the first job, when the file cannot be written (read-only mode
        bits, an immutable flag, a read-only mount): SQLite opens such a file read-only
        without a word and only refuses the first write."""
        self.db.conn.execute("BEGIN IMMEDIATE")
        try:
            self.db.conn.execute(f"PRAGMA user_version = {self.schema_version}")
        finally:
            self.db.conn.execute("ROLLBACK")

    # -- schema ---------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _check_version(self) -> int:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: the database was written by a newer lipsyncd (schema {version}, "
                             f"this one knows {len(MIGRATIONS)}); upgrade lipsyncd")
        if self.readonly and version == 0:
            raise NoDatabase(f"the database {self.path} is empty: the service has not run yet with this config")
        return version

    def _migrate(self) -> None:
        version = self._check_version()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.conn.execute("BEGIN IMMEDIATE")
            try:
                if self.schema_version < number:  # another process may have migrated meanwhile
                    for statement in _statements(script):
                        self.db.conn.execute(statement)
                    self.db.conn.execute(f"PRAGMA user_version = {number}")
                self.db.conn.execute("COMMIT")
            except BaseException:
                self.db.conn.execute("ROLLBACK")
                raise

    # -- reading --------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        rows = list(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        if not rows:
            raise StoreError(f"no job with id {job_id}")
        return Job.from_row(rows[0])

    def find_job(self, ref: str) -> Job:
        """A job by id, or by folder name (the newest job of that name)."""
        if ref.isdigit():
            return self.job(int(ref))
        rows = list(self.db.query("SELECT * FROM jobs WHERE name = ? ORDER BY id DESC LIMIT 1", [ref]))
        if not rows:
            raise StoreError(f"no job named {ref!r}; `lipsyncd status` lists jobs and their ids")
        return Job.from_row(rows[0])

    def jobs_in(self, *states: JobState) -> list[Job]:
        """Jobs in ``states``, in the order the runner takes them (priority, then oldest)."""
        marks = ", ".join("?" for _ in states)
        rows = self.db.query(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY {QUEUE_ORDER}", states)
        return [Job.from_row(r) for r in rows]

    def tasks(self, job_id: int) -> list[Task]:
        rows = self.db.query("SELECT * FROM tasks WHERE job_id = ? ORDER BY position", [job_id])
        return [Task.from_row(r) for r in rows]

    def task(self, task_id: int) -> Task:
        rows = list(self.db.query("SELECT * FROM tasks WHERE id = ?", [task_id]))
        if not rows:
            raise StoreError(f"no task with id {task_id}")
        return Task.from_row(rows[0])

    def find_finished_duplicate(self, content_hash: str, exclude: int) -> Job | None:
        rows = list(self.db.query("SELECT * FROM jobs WHERE content_hash = ? AND state = ? AND id != ? "
                                  "ORDER BY id DESC LIMIT 1", [content_hash, JobState.DONE, exclude]))
        return Job.from_row(rows[0]) if rows else None

    def work_folders(self) -> dict[Path, tuple[int, JobState]]:
        """Every job's work folder, with its job's id and state."""
        rows = self.db.query("SELECT id, state, work_dir FROM jobs")
        return {Path(row["work_dir"]): (row["id"], JobState(row["state"])) for row in rows}

    def status(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM status LIMIT ?", [limit]))

    # -- intake ---------------------------------------------------------------------------

    def begin_intake(self, name: str, processing: Path) -> Job:
        """Record that folder ``name`` is being claimed into ``processing/<id>``; the caller
        renames it there next. A crash in between is undone at the next start (``intake.recover``)."""
        with self.db.atomic():
            job_id: int = self.db.execute("INSERT INTO jobs (name, state, work_dir) VALUES (?, ?, '') RETURNING id",
                                          [name, JobState.INTAKE]).fetchone()[0]
            self.db.execute("UPDATE jobs SET work_dir = ? WHERE id = ?", [str(processing / f"job-{job_id}"), job_id])
        return self.job(job_id)

    def drop_intake(self, job_id: int) -> None:
        """Forget a claim that did not happen (the folder stays in the inbox, to be tried again)."""
        self.db.execute("DELETE FROM jobs WHERE id = ? AND state = ?", [job_id, JobState.INTAKE])

    def enqueue(self, job_id: int, *, audio: str, videos: Sequence[tuple[str, str, str | None]], naming: str,
                priority: int, options: dict[str, Any], content_hash: str) -> None:
        """The claimed folder is a valid job: one task per (video, output name, video sha256);
        state queued."""
        with self.db.atomic():
            self.db.execute("DELETE FROM tasks WHERE job_id = ?", [job_id])
            for position, (video, output_name, sha256) in enumerate(videos):
                self.db.execute("INSERT INTO tasks (job_id, position, video, output_name, video_sha256) "
                                "VALUES (?, ?, ?, ?, ?)", [job_id, position, video, output_name, sha256])
            self._update(job_id, state=JobState.QUEUED, audio=audio, naming=naming, priority=priority,
                         options=json.dumps(options, sort_keys=True), content_hash=content_hash)

    # -- running --------------------------------------------------------------------------

    def claim(self, job_id: int) -> bool:
        """queued → running, one more attempt. False when someone else changed it first."""
        cur = self.db.execute(
            f"UPDATE jobs SET state = ?, attempt = attempt + 1, started_at = {_NOW}, note = NULL, "
            f"updated_at = {_NOW} WHERE id = ? AND state = ? AND cancel_requested = 0",
            [JobState.RUNNING, job_id, JobState.QUEUED])
        return cur.rowcount == 1

    def set_note(self, job_id: int, note: str | None) -> None:
        """A visible reason a job is waiting (for example a missing model)."""
        self._update(job_id, note=note)

    def set_content_hash(self, job_id: int, content_hash: str) -> None:
        """The identity of a job's inputs, known once intake has hashed them (a skipped job keeps
        it too, so its report can name the job it repeats)."""
        self._update(job_id, content_hash=content_hash)

    def task_started(self, task_id: int) -> None:
        self.db.execute(f"UPDATE tasks SET state = ?, attempt = attempt + 1, started_at = {_NOW}, "
                        f"{_NO_PROGRESS}, error = NULL WHERE id = ?", [TaskState.RUNNING, task_id])

    def task_waiting(self, task_id: int) -> None:
        """Undo :meth:`task_started` for a video that was only previewed: it waits for its render."""
        self.db.execute(f"UPDATE tasks SET state = ?, attempt = max(0, attempt - 1), started_at = NULL, "
                        f"{_NO_PROGRESS} WHERE id = ? AND state = ?", [TaskState.QUEUED, task_id, TaskState.RUNNING])

    def task_retry(self, task_id: int, reason: str) -> None:
        """running → queued: its worker was lost (died or got stuck); it runs again, with the
        reason kept in ``error`` until then (the next :meth:`task_started` clears it)."""
        self.db.execute(f"UPDATE tasks SET state = 'queued', {_NO_PROGRESS}, error = ? WHERE id = ?", [reason, task_id])

    def task_progress(self, task_id: int, frames_done: int, frames_total: int, stage: str | None = None,
                      fps: float | None = None, eta_s: float | None = None) -> None:
        """Where the running video stands (a :class:`~lipsyncd.daemon.progress.Snapshot`), stamped
        with the time it was written so readers can count the ETA down between writes."""
        fraction = min(1.0, frames_done / frames_total) if frames_total else 0.0
        self.db.execute(f"UPDATE tasks SET progress = ?, frames_done = ?, frames_total = ?, stage = ?, fps = ?, "
                        f"eta_s = ?, progress_at = {_NOW} WHERE id = ?",
                        [fraction, frames_done, frames_total, stage, fps, eta_s, task_id])

    def task_finished(self, task_id: int, state: TaskState, error: str | None = None) -> None:
        """running → done | failed | cancelled."""
        progress = ", progress = 1" if state == TaskState.DONE else ""
        self.db.execute(f"UPDATE tasks SET state = ?, error = ?, finished_at = {_NOW}{progress} WHERE id = ?",
                        [state, error, task_id])

    def interrupt(self, job_id: int, note: str) -> None:
        """running → queued: the service stopped mid-job; it runs again, finished videos kept."""
        with self.db.atomic():
            self.db.execute(f"UPDATE tasks SET state = ?, {_NO_PROGRESS} WHERE job_id = ? AND state = ?",
                            [TaskState.QUEUED, job_id, TaskState.RUNNING])
            self._update(job_id, state=JobState.QUEUED, note=note)

    # -- finishing ------------------------------------------------------------------------

    def begin_filing(self, job_id: int, outcome: JobState, error: str | None,
                     outbox_path: Path | None, error_path: Path | None, only_from: JobState | None = None) -> bool:
        """Record the outcome and where results go *before* moving anything, so a crash while
        filing resumes with the same destinations. With ``only_from``, only a job still in that
        state is taken (False otherwise): two threads never both file one job."""
        if outcome not in FINAL_STATES:
            raise ValueError(outcome)
        return self._update(job_id, state=JobState.FILING, outcome=outcome, error=error, note=None,
                            outbox_path=str(outbox_path) if outbox_path else None,
                            error_path=str(error_path) if error_path else None, _only_from=only_from)

    def set_output_path(self, task_id: int, path: Path) -> None:
        self.db.execute("UPDATE tasks SET output_path = ? WHERE id = ?", [str(path), task_id])

    def finish(self, job_id: int) -> None:
        """filing → its recorded outcome; the job's folder has been filed."""
        self.db.execute(f"UPDATE jobs SET state = outcome, finished_at = {_NOW}, updated_at = {_NOW} "
                        "WHERE id = ? AND state = ?", [job_id, JobState.FILING])

    def filing_failed(self, job_id: int, error: str, outbox_path: str | None, error_path: str | None) -> None:
        """Results could not be written (disk full, permissions): failed, inputs still held in
        the work folder; the paths are those actually published (usually none). The reason the
        job had failed, if any, is kept after the filing problem: it is the one the user must fix.
        ``lipsyncd retry`` runs it again."""
        earlier = self.job(job_id).error
        if earlier and earlier != error:
            error = f"{error}{HAD_FAILED}{earlier.split(HAD_FAILED)[-1]}"
        self._update(job_id, state=JobState.FAILED, outcome=JobState.FAILED, error=error, outbox_path=outbox_path,
                     error_path=error_path, finished_at=_Now())

    # -- operator commands ----------------------------------------------------------------

    def request_cancel(self, job_id: int) -> Job:
        """Ask the service to cancel: a queued job is filed to error/, a running one stops soon."""
        job = self.job(job_id)
        if job.state in FINAL_STATES:
            raise StoreError(f"job {job.id} ({job.name}) is already {job.state}; nothing to cancel")
        self._update(job_id, cancel_requested=1)
        return self.job(job_id)

    def cancel_requested(self, job_id: int) -> bool:
        return bool(self.db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()[0])

    def requeue(self, job_id: int, note: str) -> None:
        """Run a job again from its held inputs: failed or cancelled tasks start over, with its
        recorded audio and options. The last error moves into the note ("... ; before: ...").
        Only a job that was queued once can be: one refused at intake has nothing to run."""
        job = self.job(job_id)
        if job.audio is None or not self.tasks(job_id):
            raise StoreError(f"job {job.id} ({job.name}) was never queued (its folder was not taken as a valid "
                             "job), so it cannot run again as it is; drop its folder into the inbox again")
        with self.db.atomic():
            self.db.execute(f"UPDATE tasks SET state = ?, {_NO_PROGRESS}, error = NULL "
                            "WHERE job_id = ? AND state != ?", [TaskState.QUEUED, job_id, TaskState.DONE])
            self._update(job_id, state=JobState.QUEUED, outcome=None, error=None, cancel_requested=0,
                         note=f"{note}; before: {job.error}" if job.error else note,
                         finished_at=None, outbox_path=None, error_path=None, notified=0)

    def set_preview_seconds(self, job_id: int, seconds: float) -> bool:
        """A waiting job also renders the first ``seconds`` of each video as a preview clip before
        its renders, as job.yaml ``preview_seconds`` asks. Its identity (``content_hash``) stays
        that of its full renders, which it still makes. False when it is no longer queued."""
        with self.db.atomic():
            job = self.job(job_id)
            options = {**(json.loads(job.options) if job.options else {}), "preview_seconds": seconds}
            return self._update(job_id, options=json.dumps(options, sort_keys=True), _only_from=JobState.QUEUED)

    def move(self, job_id: int, steps: int) -> Job:
        """Move a queued job ``steps`` places earlier (negative: later) in the queue by trading
        places, priority and rank, with its neighbours; the runner's order is the queue's."""
        with self.db.atomic():
            queue = [(j.id, j.priority, j.queue_rank if j.queue_rank is not None else j.id)
                     for j in self.jobs_in(JobState.QUEUED)]
            ids = [q[0] for q in queue]
            if job_id not in ids:
                job = self.job(job_id)
                raise StoreError(f"job {job.id} ({job.name}) is {job.state}; only waiting jobs can be moved")
            index = ids.index(job_id)
            target = max(0, min(len(queue) - 1, index - steps))
            places = [(priority, rank) for _, priority, rank in queue]  # sorted: the queue's order
            queue.insert(target, queue.pop(index))
            for (qid, _, _), (priority, rank) in zip(queue, places, strict=True):
                self.db.execute("UPDATE jobs SET priority = ?, queue_rank = ? WHERE id = ?", [priority, rank, qid])
        return self.job(job_id)

    def setting(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.db.execute(f"INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                        f"SET value = excluded.value, updated_at = {_NOW}", [key, value])

    @property
    def paused(self) -> bool:
        """The whole queue is paused: the runner finishes the current job and takes no next one."""
        return self.setting(PAUSED) == "1"

    def set_paused(self, paused: bool) -> None:
        self.set_setting(PAUSED, "1" if paused else "0")

    # -- history and estimates ----------------------------------------------------------

    def video_seconds(self, job_id: int | None = None, limit: int = 20) -> list[float]:
        """How long finished videos took to render, newest first (of one job, or of any)."""
        where, params = ("AND job_id = ?", [job_id]) if job_id is not None else ("", [])
        rows = self.db.execute(
            "SELECT (julianday(finished_at) - julianday(started_at)) * 86400 FROM tasks "
            f"WHERE state = ? AND started_at IS NOT NULL AND finished_at IS NOT NULL {where} "
            "ORDER BY finished_at DESC, id DESC LIMIT ?", [TaskState.DONE, *params, limit]).fetchall()
        return [float(r[0]) for r in rows]

    def history(self, states: tuple[JobState, ...] = FINAL_STATES, name: str = "", since: str | None = None,
                until: str | None = None, limit: int = 100) -> list[Job]:
        """Finished jobs, newest first; ``name``: part of the folder name (any case);
        ``since``/``until``: ``YYYY-MM-DD`` days (UTC) the job was dropped in, both included."""
        marks = ", ".join("?" for _ in states)
        sql = f"SELECT * FROM jobs WHERE state IN ({marks})"
        params: list[Any] = list(states)
        if name:
            sql += " AND instr(lower(name), lower(?)) > 0"
            params.append(name)
        if since:
            sql += " AND created_at >= ?"
            params.append(since)
        if until:
            sql += " AND created_at < date(?, '+1 day')"
            params.append(until)
        rows = self.db.query(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [Job.from_row(r) for r in rows]

    def mean_job_seconds(self, limit: int = 20) -> float | None:
        """Mean start-to-finish seconds of the last ``limit`` done jobs."""
        row = self.db.execute(
            "SELECT avg(s) FROM (SELECT (julianday(finished_at) - julianday(started_at)) * 86400 AS s FROM jobs "
            "WHERE state = ? AND started_at IS NOT NULL AND finished_at IS NOT NULL "
            "ORDER BY id DESC LIMIT ?)", [JobState.DONE, limit]).fetchone()
        return row[0]

    def to_notify(self) -> list[Job]:
        """Finished jobs whose notifications have not gone out yet, oldest first."""
        marks = ", ".join("?" for _ in FINAL_STATES)
        rows = self.db.query(f"SELECT * FROM jobs WHERE notified = 0 AND state IN ({marks}) ORDER BY finished_at, id",
                             FINAL_STATES)
        return [Job.from_row(r) for r in rows]

    def set_notified(self, job_id: int) -> None:
        self.db.execute("UPDATE jobs SET notified = 1 WHERE id = ?", [job_id])

    def finished_before(self, cutoff: str, column: str) -> list[Job]:
        """Finished jobs older than ``cutoff`` (database time) whose ``column`` (``outbox_path`` or
        ``error_path``) names a folder."""
        if column not in ("outbox_path", "error_path"):
            raise ValueError(column)
        marks = ", ".join("?" for _ in FINAL_STATES)
        rows = self.db.query(f"SELECT * FROM jobs WHERE state IN ({marks}) AND finished_at < ? "
                             f"AND {column} IS NOT NULL ORDER BY id", [*FINAL_STATES, cutoff])
        return [Job.from_row(r) for r in rows]

    def delete_finished_before(self, cutoff: str) -> int:
        """Forget finished jobs (and their videos) older than ``cutoff``; how many."""
        marks = ", ".join("?" for _ in FINAL_STATES)
        cur = self.db.execute(f"DELETE FROM jobs WHERE state IN ({marks}) AND finished_at < ?", [*FINAL_STATES, cutoff])
        return cur.rowcount

    def count_by_state(self) -> dict[str, int]:
        return {state: n for state, n in self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state")}

    # -- helpers --------------------------------------------------------------------------

    def _update(self, job_id: int, _only_from: JobState | None = None, **values: Any) -> bool:
        """Set ``values`` on the job (only while it is in state ``_only_from``, if given); True if it was."""
        sets = ", ".join(f"{k} = {v.sql if isinstance(v, _Now) else '?'}" for k, v in values.items())
        params = [v for v in values.values() if not isinstance(v, _Now)]
        guard = " AND state = ?" if _only_from else ""
        cur = self.db.execute(f"UPDATE jobs SET {sets}, updated_at = {_NOW} WHERE id = ?{guard}",
                              [*params, job_id, *([_only_from] if _only_from else [])])
        return cur.rowcount == 1




class _Now:
    """Marks a column to be set to the database's current time."""

    sql = _NOW


def damaged(path: Path, reason: str) -> StoreError:
    reason = " ".join(reason.replace("*** in database main ***", "").split())
    return StoreError(f"the database {path} is damaged ({reason}); move it aside (mv {path.name} "
                      f"{path.name}.broken) to start with an empty queue, or restore it from a backup")


def _read_only(path: Path, exc: BaseException, reason: str) -> bool:
    if isinstance(exc, PermissionError) or "readonly" in reason or "read-only" in reason:
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EPERM, errno.EACCES):
        return True
    target = path if path.exists() else path.parent
    return target.exists() and not os.access(target, os.W_OK)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that creates no file. Without a ``-wal`` file no service has
    the database open and every committed change is in the main file: open it immutable (no
    ``-shm``, no locks). With one, a service runs (or crashed) and readers must use the
    existing ``-wal``/``-shm``; anything SQLite still creates is handed to the database's
    owner, so a root ``status`` never leaves files the service cannot write."""
    uri = f"file:{quote(str(path))}"
    if not Path(f"{path}-wal").exists():
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
    companions = [Path(f"{path}-{suffix}") for suffix in ("wal", "shm")]
    missing = [p for p in companions if not p.exists()]
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL index now
    owner = path.stat()
    for created in (p for p in missing if p.exists()):
        if os.geteuid() == 0:
            os.chown(created, owner.st_uid, owner.st_gid)
    return conn


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``sqlite3.complete_statement`` knows where they end)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
