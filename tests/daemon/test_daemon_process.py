"""The real service in a subprocess (with the fake engine): kill -9 and SIGTERM mid-job, then restart."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_helpers import make_job, wait_for, write_config

HARNESS = Path(__file__).with_name("daemon_harness.py")
FILES = {"speech.wav": b"RIFF speech", "a.mp4": b"first video", "b.mp4": b"second video", "job.yaml": b"priority: 1\n"}


def start(config: Path, frame_delay: float, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(config.parent / "service.log", "ab") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen([sys.executable, str(HARNESS), str(config), str(frame_delay)], stdout=log,
                                stderr=log, env={**os.environ, **(env or {})})


def query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            return []


def rendering(db: Path) -> bool:
    return bool(query(db, "SELECT 1 FROM tasks WHERE state = 'running' AND progress > 0"))


def job_state(db: Path) -> str | None:
    rows = query(db, "SELECT state FROM jobs")
    return rows[0][0] if rows else None


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    write_config(tmp_path)
    return tmp_path


def stop_service(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


def test_kill_9_mid_render_loses_nothing_and_the_job_runs_again(service_dir):
    config, db = service_dir / "config.yaml", service_dir / "state" / "lipsyncd.sqlite3"
    make_job(service_dir / "inbox", "talk", FILES)
    proc = start(config, frame_delay=0.1)
    try:
        wait_for(lambda: rendering(db), "a render to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    finally:
        proc.kill()
    assert list((service_dir / "outbox").iterdir()) == []  # nothing half-done is visible
    assert job_state(db) == "running"

    proc = start(config, frame_delay=0)
    try:
        wait_for(lambda: job_state(db) == "done", "the interrupted job to finish")
        assert stop_service(proc) == 0
    finally:
        proc.kill()
    out = service_dir / "outbox" / "talk"
    assert files_under(out / "input") == FILES  # every input accounted for, exactly once
    assert (out / "a.mp4").read_bytes().startswith(b"LIPSYNCED") and (out / "b.mp4").is_file()
    assert list((service_dir / "error").iterdir()) == []
    assert query(db, "SELECT attempt FROM jobs") == [(2,)]
    assert [p.name for p in (service_dir / "inbox").iterdir()] == [".processing"]


def test_sigterm_stops_gracefully_records_the_job_interrupted_and_it_reruns(service_dir):
    config, db = service_dir / "config.yaml", service_dir / "state" / "lipsyncd.sqlite3"
    sock_path = service_dir / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(10)
    make_job(service_dir / "inbox", "talk", FILES)
    proc = start(config, frame_delay=0.2, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "500000"})
    try:
        assert listener.recv(4096).startswith(b"READY=1\nSTATUS=Watching")
        wait_for(lambda: rendering(db), "a render to start")
        messages = []
        wait_for(lambda: messages.append(listener.recv(4096)) or b"WATCHDOG=1" in messages, "a watchdog ping")
        assert stop_service(proc) == 0
    finally:
        proc.kill()
    while not messages[-1].startswith(b"STOPPING=1"):
        messages.append(listener.recv(4096))
    listener.close()
    assert any(m.startswith(b"STATUS=Job 1 (talk): a.mp4") for m in messages)
    assert query(db, "SELECT state, note, attempt FROM jobs") == [
        ("queued", "Interrupted by a service stop; it runs again at the next start.", 1)]
    assert list((service_dir / "outbox").iterdir()) == []

    proc = start(config, frame_delay=0)
    try:
        wait_for(lambda: job_state(db) == "done", "the job to run again")
        assert stop_service(proc) == 0
    finally:
        proc.kill()
    assert files_under(service_dir / "outbox" / "talk" / "input") == FILES
    assert query(db, "SELECT attempt FROM jobs") == [(2,)]
