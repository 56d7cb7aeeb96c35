"""Journald-style stderr lines, and the per-job log that records only the job's own thread."""

from __future__ import annotations

import logging
import threading

import pytest
from lipsyncd.daemon import logs


@pytest.fixture
def restore_logging():
    """setup() changes the process-wide "lipsyncd" logger; later tests (caplog) need it back."""
    root = logging.getLogger(logs.ROOT)
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


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
