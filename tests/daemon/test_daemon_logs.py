"""Journald-style stderr lines, and the per-job log that records only the job's own thread."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import warnings

import pytest
from lipsyncd.daemon import logs
from lipsyncd.daemon.watcher import InboxWatcher


@pytest.fixture
def restore_logging():
    """setup() changes the process-wide "lipsyncd" logger; later tests (caplog) need it back."""
    root = logging.getLogger(logs.ROOT)
    saved = (list(root.handlers), root.level, root.propagate, warnings.showwarning)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]
    warnings.showwarning = saved[3]


def test_journal_lines_carry_the_syslog_priority():
    formatter = logs.JournalFormatter("%(name)s: %(message)s")
    record = logging.LogRecord("lipsyncd.x", logging.WARNING, __file__, 1, "two\nlines", None, None)
    assert formatter.format(record) == "<4>lipsyncd.x: two\n<4>lines"


def test_setup_uses_the_journal_format_under_systemd(monkeypatch, restore_logging):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    logs.setup("debug")
    handler, = logging.getLogger(logs.ROOT).handlers
    assert isinstance(handler.formatter, logs.JournalFormatter)
    monkeypatch.delenv("JOURNAL_STREAM")
    logs.setup("info")
    handler, = logging.getLogger(logs.ROOT).handlers
    assert not isinstance(handler.formatter, logs.JournalFormatter)


def test_job_log_gets_this_thread_s_lines_only(tmp_path):
    log = logging.getLogger("lipsyncd.daemon.test")
    path = tmp_path / "job.log"
    with logs.job_log(path):
        log.info("rendering clip.mp4")
        other = threading.Thread(target=lambda: log.info("intake: another folder"))
        other.start()
        other.join()
    log.info("after the job")
    text = path.read_text()
    assert "INFO rendering clip.mp4" in text
    assert "another folder" not in text and "after the job" not in text


def test_a_library_warning_is_one_short_log_line(capsys, restore_logging):
    logs.setup("debug")
    huge = "Callback with id '1' already exists for watch " + "<Watch wd=3 path=b'/srv/inbox/x'> " * 1000
    warnings.warn_explicit(huge, RuntimeWarning, "/venv/site-packages/watchdog/observers/inotify.py", 365)
    warnings.warn_explicit("something odd", UserWarning, "/venv/site-packages/other/mod.py", 7)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    watchdog_line, other_line = lines
    assert "DEBUG" in watchdog_line and "RuntimeWarning: Callback with id '1' already exists" in watchdog_line
    assert "more characters cut" in watchdog_line and len(watchdog_line) < logs.MAX_WARNING_CHARS + 150
    assert "WARNING" in other_line and other_line.endswith("UserWarning: something odd (mod.py:7)")


def test_a_storm_of_folders_keeps_every_journal_line_short(tmp_path, capsys, restore_logging):
    """Folders created and removed by the hundred: watchdog's inotify observer warns when a
    sub-folder appears between its watch on the parent and its scan of it (a race, so the storm
    repeats until it happened), each warning holding its whole watch table."""
    logs.setup("debug")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = InboxWatcher(inbox, "inotify", 1)
    watcher.start()
    lines: list[str] = []
    try:
        for _ in range(20):
            for i in range(200):
                (inbox / f"job {i}").mkdir()
                for depth in ("a", "a/b", "a/b/c"):
                    (inbox / f"job {i}" / depth).mkdir()
            for i in range(200):
                shutil.rmtree(inbox / f"job {i}")
            time.sleep(0.3)
            lines += capsys.readouterr().err.splitlines()
            if any("already exists for watch" in line for line in lines):
                break
    finally:
        watcher.stop()
    # The race is watchdog's, so a storm may not provoke it on every machine; whatever it logged is
    # short (the shape of the provoked warning is pinned down by the test above).
    assert lines and max(len(line) for line in lines) < logs.MAX_WARNING_CHARS + 150


def test_log_level_warning_holds_on_stderr_while_a_job_logs_its_story(tmp_path, capsys, restore_logging):
    logs.setup("warning")
    log = logging.getLogger("lipsyncd.daemon.test")
    with logs.job_log(tmp_path / "job.log"):
        log.info("rendering clip.mp4")
        log.warning("few faces in clip.mp4")
    log.info("after the job")
    err = capsys.readouterr().err
    assert "few faces in clip.mp4" in err
    assert "rendering clip.mp4" not in err and "after the job" not in err
    text = (tmp_path / "job.log").read_text()
    assert "INFO rendering clip.mp4" in text and "WARNING few faces in clip.mp4" in text
