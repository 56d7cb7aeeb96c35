"""An always-current status on the share itself, for people who never open a browser.

Two files in ``status.folder`` (usually the share's root, beside ``inbox/``):
``lipsyncd-status.txt`` and ``lipsyncd-status.html`` (the HTML refreshes itself every
10 seconds when opened from the share). Each is written under a hidden temporary name in the
same folder, flushed, and renamed over the old one: a reader sees the old or the new file,
never half of one, and the temporary name starts with a dot, so no copy tool and no intake
ever picks it up. Written at most every ``MIN_INTERVAL_S`` seconds, and only when the text
changed.
"""

from __future__ import annotations

import html
import logging
import os
import time
from pathlib import Path
from typing import Any

from .progress import format_duration
from .states import TO_OUTBOX, WAITING_STATES, JobState

log = logging.getLogger(__name__)

TEXT_NAME = "lipsyncd-status.txt"
HTML_NAME = "lipsyncd-status.html"
MIN_INTERVAL_S = 5.0


def status_lines(view: dict[str, Any]) -> list[tuple[str, str]]:
    """(job name, where it is) for every job shown, in the queue's order."""
    lines = []
    for row in view["jobs"]:
        state = row["state"]
        if state == JobState.RUNNING:
            where = (f"rendering {row['percent']:.0f} % ({row['current_video'] or 'starting'}, "
                     f"{format_duration(row['job_eta_s'])} left)")
        elif state == JobState.FILING:
            where = "filing the results"
        elif state in WAITING_STATES:
            position = row.get("queue_position")
            where = f"queued {_ordinal(position)}" if position else "being taken in"
            if view["paused"]:
                where += " (queue paused)"
        elif state in TO_OUTBOX:
            where = "done → outbox" + (f" ({row['message']})" if row.get("message") else "")
        else:
            where = f"{state} → error folder" + (f": {row['message']}" if row.get("message") else "")
        lines.append((row["name"], where))
    return lines


def render_text(view: dict[str, Any]) -> str:
    lines = status_lines(view)
    head = [f"lipsyncd status at {view['now']}" + ("  (QUEUE PAUSED)" if view["paused"] else ""), ""]
    body = [f"{name}: {where}" for name, where in lines] or ["No jobs yet: drop a job folder into the inbox."]
    return "\r\n".join(head + body) + "\r\n"  # CRLF: Notepad on old Windows, too


def render_html(view: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{html.escape(where)}</td></tr>"
                   for name, where in status_lines(view))
    paused = "<p><strong>Queue paused.</strong></p>" if view["paused"] else ""
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">"
            "<title>lipsyncd status</title></head><body style=\"font-family: sans-serif\">"
            f"<h1>lipsyncd</h1><p>Status at {html.escape(view['now'] or '')}</p>{paused}"
            f"<table cellpadding=\"4\"><tr><th align=\"left\">Job</th><th align=\"left\">Where it is</th></tr>"
            f"{rows}</table></body></html>\n")


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ShareStatus:
    """Keeps the two files current; called from the service's supervisor loop."""

    def __init__(self, folder: Path, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.folder = folder
        self.min_interval_s = min_interval_s
        self._last_write = float("-inf")
        self._last_body = ""
        self._failed = False

    def update(self, view: dict[str, Any], now: float | None = None) -> bool:
        """Write the files if due and changed; True if written. A failure is logged once, never raised."""
        now = time.monotonic() if now is None else now
        body = "\n".join(f"{n}: {w}" for n, w in status_lines(view)) + str(view["paused"])
        if now - self._last_write < self.min_interval_s or body == self._last_body:
            return False
        try:
            write_atomic(self.folder / TEXT_NAME, render_text(view))
            write_atomic(self.folder / HTML_NAME, render_html(view))
        except OSError as exc:
            if not self._failed:
                log.warning("cannot write the status files in %s: %s (status.folder)", self.folder, exc.strerror)
            self._failed = True
            return False
        self._failed = False
        self._last_write, self._last_body = now, body
        return True


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
