"""Logging: one line per event on stderr, read by journald; and one log file per job.

Under systemd, stderr goes to the journal (systemd sets ``$JOURNAL_STREAM``): lines then start
with a ``<N>`` syslog priority that journald turns into the entry's level (so ``journalctl -p
warning`` works) and carry no timestamp of their own, which the journal adds. In a terminal
they get a timestamp and a level word instead. While a job runs, the runner's thread also
writes to ``job.log`` in the job's work folder; that file travels with the results.

Python warnings from libraries come through the same log, one short line each (see
:func:`show_warning`), never a raw multi-kilobyte dump on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import TextIO

ROOT = "lipsyncd"
MAX_WARNING_CHARS = 300
"""A library warning longer than this is cut: the journal is read by people."""
_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<6>runner: job 3 (Interview): started`` — the priority prefix journald understands."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def setup(level: str = "info") -> None:
    """Send the service's log to stderr, journald-style when running under systemd. The level is
    set on the stderr handler as well as on the logger: :func:`job_log` lowers the logger's level
    to INFO while a job runs, and ``log_level: warning`` must still hold on stderr then."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level.upper())
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger(ROOT)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    warnings.showwarning = show_warning


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """Log a Python warning as one line of at most :data:`MAX_WARNING_CHARS` characters.

    watchdog's inotify observer warns "Callback with id … already exists for watch …" whenever it
    watches a folder twice (a sub-folder created while its new parent is being scanned, common
    when many folders come and go); the message embeds the repr of its whole watch table, 17-46 KB
    a line in a storm of folders, and means only that the second watch replaced the first. That
    one goes to debug.
    """
    text = " ".join(str(message).split())
    if len(text) > MAX_WARNING_CHARS:
        text = f"{text[:MAX_WARNING_CHARS]}… ({len(text) - MAX_WARNING_CHARS} more characters cut)"
    harmless = issubclass(category, RuntimeWarning) and "watchdog" in PurePath(filename).parts
    logging.getLogger(f"{ROOT}.warnings").log(logging.DEBUG if harmless else logging.WARNING, "%s: %s (%s:%d)",
                                              category.__name__, text, PurePath(filename).name, lineno)


class _ThisThread(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident


@contextmanager
def job_log(path: Path) -> Iterator[None]:
    """Copy what this thread logs to ``path`` (appending: a re-run adds to the first attempt's log)."""
    handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")  # a raw non-UTF-8 name
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_ThisThread())
    root = logging.getLogger(ROOT)
    level = root.level
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))  # the job's story; stderr's handler keeps its level
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
