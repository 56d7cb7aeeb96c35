"""Starting and stopping the service: one instance per state folder, a heartbeat that
``status`` reads, a clean stop while torch is busy, one-line refusals of an unusable database
or state folder, and read-only commands that create nothing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_helpers import make_job, write_config, wait_for
from lipsyncd.daemon import lock, service
from lipsyncd.daemon.cli import cli
from lipsyncd.daemon.lock import AlreadyRunning, ServiceLock
from lipsyncd.daemon.store import NoDatabase, Store, StoreError
from test_daemon_process import FILES, job_state, query, rendering, start, stop_service

NOBODY = 65534
CLI = [sys.executable, "-c", "from lipsyncd.daemon.cli import main; main()"]


AS_SERVICE_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
"""Root without the capabilities that ignore file modes: permissions bite as they do for the
service's own user (an unprivileged uid could not run the interpreter under /root here)."""


def lipsyncd(config: Path, *args: str, unprivileged: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
    command = [*(AS_SERVICE_USER if unprivileged else []), *CLI, "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LIPSYNCD_CONFIG": ""}, cwd=config.parent)


# -- the lock ------------------------------------------------------------------------------

def test_the_lock_admits_one_holder_and_probe_sees_it_without_creating_anything(tmp_path):
    assert lock.probe(tmp_path) == lock.ServiceState(running=False)
    assert list(tmp_path.iterdir()) == []
    first = ServiceLock(tmp_path)
    first.acquire()
    try:
        state = lock.probe(tmp_path)
        assert (state.running, state.pid) == (True, os.getpid()) and state.heartbeat_age_s < 5
        os.utime(first.path, (time.time() - 100, time.time() - 100))
        assert lock.probe(tmp_path).heartbeat_age_s >= 99
        first.beat()
        assert lock.probe(tmp_path).heartbeat_age_s < 5
        with pytest.raises(AlreadyRunning, match=f"already running on {tmp_path} \\(pid {os.getpid()}\\)"):
            ServiceLock(tmp_path).acquire()
    finally:
        first.release()
    assert not lock.probe(tmp_path).running
    second = ServiceLock(tmp_path)
    second.acquire()  # a released (or dead) holder's file never blocks a start
    second.release()


# -- two instances, status beside the service ------------------------------------------------

def test_a_second_service_exits_at_once_naming_the_first_and_status_and_cancel_work_beside_it(tmp_path):
    config, db = write_config(tmp_path), tmp_path / "state" / "lipsyncd.sqlite3"
    make_job(tmp_path / "inbox", "talk", FILES)
    first = start(config, frame_delay=3.0)  # 30 s of render: long enough for three CLI starts on a busy machine
    try:
        wait_for(lambda: rendering(db), "a render to start")
        began = time.monotonic()
        second = lipsyncd(config, "run")
        assert time.monotonic() - began < 10
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"Error: lipsyncd is already running on {tmp_path / 'state'} (pid {first.pid}); one service per state "
            f"folder: stop that one first (systemctl stop lipsyncd, or kill {first.pid}), or give this one "
            "another folders.state"]
        assert query(db, "SELECT state, attempt FROM jobs") == [("running", 1)]  # not re-queued by the second

        status = lipsyncd(config, "status")
        assert status.returncode == 0, status.stderr
        # healthy: a heartbeat younger than the 30 s limit (a loaded machine starts `status` slowly)
        assert status.stdout.splitlines()[0] in {f"service: running (pid {first.pid}), last heartbeat {n} s ago"
                                                 for n in range(30)}
        assert "running" in status.stdout.splitlines()[2]
        cancel = lipsyncd(config, "cancel", "talk")
        assert cancel.returncode == 0 and "cancelling" in cancel.stdout
        wait_for(lambda: job_state(db) == "cancelled", "the cancel to take effect")
        assert stop_service(first) == 0
    finally:
        first.kill()
    assert lipsyncd(config, "status").stdout.startswith("service: not running\n")


# -- stopping while torch is busy ----------------------------------------------------------

def test_sigterm_while_torch_is_busy_requeues_the_job_and_exits_0_within_the_timeout(tmp_path):
    config = write_config(tmp_path, service={"shutdown_timeout": 1})
    db = tmp_path / "state" / "lipsyncd.sqlite3"
    make_job(tmp_path / "inbox", "busy", {"speech.wav": b"RIFF", "a.mp4": b"torchbusy"})
    proc = start(config, frame_delay=0)
    try:
        wait_for(lambda: rendering(db), "torch to get busy", timeout=60)
        time.sleep(0.5)
        began = time.monotonic()
        code = stop_service(proc)
        elapsed = time.monotonic() - began
    finally:
        proc.kill()
    log = (tmp_path / "service.log").read_text()
    assert code == 0, log
    assert elapsed < 1 + 5, elapsed
    assert "terminate called" not in log and "Traceback" not in log
    assert "put back in the queue" in log
    assert query(db, "SELECT state, note FROM jobs") == [
        ("queued", "Interrupted by a service stop; it runs again at the next start.")]
    assert query(db, "SELECT state FROM tasks") == [("queued",)]


# -- an unusable database or state folder ----------------------------------------------------

def _corrupt(db: Path) -> None:
    db.write_bytes(b"this is not a database, it is a shopping list\n" * 200)


def _folder(db: Path) -> None:
    db.mkdir()


def _immutable(db: Path) -> None:
    Store(db).close()
    subprocess.run(["chattr", "+i", str(db)], check=True)


def _malformed(db: Path) -> None:
    store = Store(db)
    for n in range(300):
        store.begin_intake(f"job {n} " + "x" * 200, db.parent)
    store.close()
    with open(db, "r+b") as f:  # keep the header, smash a page in the middle of the jobs table
        f.seek(4096 * 3)
        f.write(b"\xff" * 4096)


CASES = {
    "corrupt": (_corrupt, "is damaged (file is not a database); move it aside (mv lipsyncd.sqlite3 "
                          "lipsyncd.sqlite3.broken) to start with an empty queue, or restore it from a backup"),
    "malformed": (_malformed, "is damaged ("),
    "a folder": (_folder, "is a folder, not a file; move it away or set folders.state to another folder"),
    "immutable": (_immutable, "cannot be written (attempt to write a readonly database); give the service's "
                              "user write access to it and to"),
}


@pytest.mark.parametrize("case", CASES)
def test_an_unusable_database_stops_the_start_with_one_line(tmp_path, case):
    make_unusable, words = CASES[case]
    config, db = write_config(tmp_path), tmp_path / "state" / "lipsyncd.sqlite3"
    db.parent.mkdir()
    make_unusable(db)
    try:
        result = lipsyncd(config, "run")
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: the database {db} ") and words in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "ready" not in result.stderr


def test_a_database_the_service_user_cannot_write_stops_the_start_with_one_line(tmp_path):
    config, db = write_config(tmp_path), tmp_path / "state" / "lipsyncd.sqlite3"
    Store(db).close()
    db.chmod(0o444)
    result = lipsyncd(config, "run", unprivileged=True)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: the database {db} cannot be written (attempt to write a readonly database); give the service's "
        f"user write access to it and to {db.parent} (chown, chmod u+w, chattr -i, or remount read-write), "
        "then start again"]


def _folder_read_only(state: Path) -> None:
    state.mkdir(mode=0o555)


def _lock_file_read_only(state: Path) -> None:  # left by a `lipsyncd run` started by hand as root
    state.mkdir()
    (state / "lipsyncd.pid").write_text("1\n")
    (state / "lipsyncd.pid").chmod(0o444)


@pytest.mark.parametrize("make_unwritable", [_folder_read_only, _lock_file_read_only])
def test_a_state_folder_the_service_user_cannot_write_stops_the_start_with_one_line(tmp_path, make_unwritable):
    config = write_config(tmp_path)
    make_unwritable(tmp_path / "state")
    result = lipsyncd(config, "run", unprivileged=True)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: cannot write {tmp_path / 'state' / 'lipsyncd.pid'} (Permission denied); give the service's user "
        f"write access to the state folder {tmp_path / 'state'} and its files (chown -R, chmod u+w, chattr -i)"]


def test_a_state_folder_that_cannot_be_created_stops_the_start_with_one_line(tmp_path):
    (tmp_path / "state").write_text("a file where the state folder should be")
    result = lipsyncd(write_config(tmp_path), "run")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: cannot create the folder {tmp_path / 'state'} (File exists); create it for the service's user "
        "or fix the folders in the config (lipsyncd doctor checks them)"]


# -- read-only opening ---------------------------------------------------------------------

def test_read_only_open_of_a_missing_database_is_a_clear_no_database(tmp_path):
    with pytest.raises(NoDatabase, match="no database at .*: the service has not run yet with this config"):
        Store(tmp_path / "state" / "s.db", readonly=True)
    assert list(tmp_path.iterdir()) == []


def test_read_only_open_creates_no_companion_files_and_sees_a_live_writer(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]
    reader = Store(path, readonly=True)
    assert reader.status() == []
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]
    writer = Store(path)
    writer.begin_intake("live", tmp_path)
    reader = Store(path, readonly=True)
    assert [r["name"] for r in reader.status()] == ["live"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.db.execute("DELETE FROM jobs")
    reader.close()
    writer.close()


def test_read_only_open_as_root_hands_files_it_must_create_to_the_database_owner(tmp_path):
    path = tmp_path / "s.db"
    writer = Store(path)
    writer.begin_intake("in the wal", tmp_path)
    crashed = tmp_path / "crashed"  # what a crash leaves: the database and its -wal, no -shm
    crashed.mkdir()
    shutil.copy(path, crashed / "s.db")
    shutil.copy(f"{path}-wal", crashed / "s.db-wal")
    writer.close()
    for f in crashed.iterdir():
        os.chown(f, NOBODY, NOBODY)
    reader = Store(crashed / "s.db", readonly=True)
    assert [r["name"] for r in reader.status()] == ["in the wal"]
    reader.close()
    assert {p.name: p.stat().st_uid for p in crashed.iterdir()} == {"s.db": NOBODY, "s.db-wal": NOBODY,
                                                                    "s.db-shm": NOBODY}


def test_status_of_an_unusable_database_is_one_line_and_non_zero(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    _corrupt(tmp_path / "state" / "lipsyncd.sqlite3")
    result = CliRunner().invoke(cli, ["--config", str(config), "status"], obj={}, env={"LIPSYNCD_CONFIG": None})
    assert result.exit_code == 1
    assert result.output.startswith("Error: the database ") and len(result.output.splitlines()) == 1
    assert "is damaged" in result.output


def test_store_errors_name_the_file_and_what_to_do(tmp_path):
    (tmp_path / "d.db").mkdir()
    with pytest.raises(StoreError, match="is a folder, not a file"):
        Store(tmp_path / "d.db")


# -- library caches ------------------------------------------------------------------------

def test_library_caches_go_under_the_service_cache_folder_and_an_explicit_setting_wins(cfg):
    environ = {"TORCH_HOME": "/opt/torch-hub"}
    service.use_service_caches(cfg, environ)
    root = cfg.folders.state / "cache"  # the test config has no engine.cache_dir
    assert environ == {"NUMBA_CACHE_DIR": str(root / "numba"), "TORCH_HOME": "/opt/torch-hub",
                       "MPLCONFIGDIR": str(root / "matplotlib"), "XDG_CACHE_HOME": str(root / "xdg")}
    with_cache = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, cache_dir=Path("/var/cache/x")))
    environ = {}
    service.use_service_caches(with_cache, environ)
    assert environ["NUMBA_CACHE_DIR"] == "/var/cache/x/numba"


def test_doctor_finds_a_damaged_database_that_opens(tmp_path):
    from lipsyncd.daemon import doctor
    from lipsyncd.daemon.config import load

    config = load(write_config(tmp_path), environ={})
    (tmp_path / "state").mkdir()
    _malformed(config.folders.database)
    check, = doctor._database(config)
    assert check.level == doctor.FAIL and check.detail.startswith(f"the database {config.folders.database} is damaged")


def test_an_immutable_state_folder_stops_even_root_with_one_line(tmp_path):
    config, state = write_config(tmp_path), tmp_path / "state"
    state.mkdir()
    subprocess.run(["chattr", "+i", str(state)], check=True)
    try:
        result = lipsyncd(config, "run")
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: cannot write {state / 'lipsyncd.pid'} (Operation not permitted); give the service's user "
        f"write access to the state folder {state} and its files (chown -R, chmod u+w, chattr -i)"]
