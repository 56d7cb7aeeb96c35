"""Notifications when a job finishes: Apprise, a plain JSON webhook and a post-job command.

A thread of its own reads the database for finished jobs not yet notified (``jobs.notified``),
sends each to every configured channel, retrying a failed delivery with exponential backoff
(``notify.retries`` times, from ``notify.backoff`` seconds, doubling, at most 5 minutes
apart), then marks the job notified. The runner never waits for it, so a dead webhook or a
hanging script cannot block or fail the queue; a service stop mid-retry leaves the job
unmarked and it is notified after the restart (at least once, never silently lost).

- **webhook**: ``POST`` of the event as JSON (below); any 2xx is delivered.
- **command**: run with the event as JSON on stdin and ``LIPSYNCD_JOB_ID``, ``_NAME``,
  ``_STATE``, ``_OUTBOX``, ``_ERROR_DIR`` in its environment (like Paperless's post-consume
  script); exit status 0 is delivered; killed after ``COMMAND_TIMEOUT_S``.
- **apprise**: each URL (``mailto://``, ``slack://``, ``tgram://``, ``ntfy://``, …) gets a
  title and a short body; needs the ``notify`` extra (``pip install lipsyncd[notify]``).

The event: ``{"event": "job.done", "job": {"id", "name", "state", "error", "outbox",
"error_folder", "created_at", "started_at", "finished_at"}, "videos": [{"video", "output",
"state", "error"}]}`` with times in ISO 8601 (UTC).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .config import Config, Notify
from .progress import iso
from .states import TaskState
from .store import Job, Store

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 300.0
MAX_BACKOFF_S = 300.0


class DeliveryError(RuntimeError):
    """One attempt to deliver failed; the message says why (for the log)."""


class Channel(Protocol):
    name: str

    def send(self, event: dict[str, Any]) -> None:
        """Deliver ``event`` or raise :class:`DeliveryError`."""


def job_event(store: Store, job: Job) -> dict[str, Any]:
    return {
        "event": f"job.{job.state}",
        "job": {"id": job.id, "name": job.name, "state": job.state, "error": job.error, "outbox": job.outbox_path,
                "error_folder": job.error_path, "created_at": iso(job.created_at),
                "started_at": iso(job.started_at), "finished_at": iso(job.finished_at)},
        "videos": [{"video": t.video, "output": t.output_name, "state": t.state, "error": t.error}
                   for t in store.tasks(job.id)],
    }


def summary(event: dict[str, Any]) -> tuple[str, str]:
    """(title, body) in words, for chat and e-mail."""
    job, videos = event["job"], event["videos"]
    done = sum(v["state"] == TaskState.DONE for v in videos)
    title = f"lipsyncd: {job['name']} {job['state']}"
    where = job["outbox"] or job["error_folder"] or "-"
    body = f"{done} of {len(videos)} videos done. Results: {where}"
    if job["error"]:
        body += f"\n{job['error']}"
    return title, body


class Webhook:
    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, event: dict[str, Any]) -> None:
        data = json.dumps(event, ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "lipsyncd"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"{self.url} answered {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"{self.url}: {getattr(exc, 'reason', exc)}") from None


class Command:
    name = "command"

    def __init__(self, args: list[str]) -> None:
        self.args = args

    def send(self, event: dict[str, Any]) -> None:
        job = event["job"]
        env = {**os.environ, "LIPSYNCD_JOB_ID": str(job["id"]), "LIPSYNCD_JOB_NAME": job["name"],
               "LIPSYNCD_JOB_STATE": job["state"], "LIPSYNCD_JOB_OUTBOX": job["outbox"] or "",
               "LIPSYNCD_JOB_ERROR_DIR": job["error_folder"] or ""}
        try:
            done = subprocess.run(self.args, input=json.dumps(event, ensure_ascii=False).encode(), env=env,
                                  capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(f"{self.args[0]}: {exc}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-300:]
            raise DeliveryError(f"{self.args[0]} exited with status {done.returncode}: {tail}")


class AppriseChannel:
    name = "apprise"

    def __init__(self, urls: list[str]) -> None:
        import apprise  # the optional `notify` extra

        self._apprise = apprise.Apprise()
        for url in urls:
            if not self._apprise.add(url):
                raise ValueError(f"notify.apprise: Apprise does not understand {url!r}")

    def send(self, event: dict[str, Any]) -> None:
        title, body = summary(event)
        if not self._apprise.notify(title=title, body=body):
            raise DeliveryError("Apprise could not deliver to every service (its log says which)")


def channels(settings: Notify) -> list[Channel]:
    """The channels the config asks for; one that cannot be set up is logged and left out."""
    found: list[Channel] = []
    if settings.webhook:
        found.append(Webhook(settings.webhook))
    if settings.command:
        found.append(Command(list(settings.command)))
    if settings.apprise:
        try:
            found.append(AppriseChannel(list(settings.apprise)))
        except ImportError:
            log.error("notify.apprise is set but Apprise is not installed: pip install 'lipsyncd[notify]'")
        except ValueError as exc:
            log.error("%s", exc)
    return found


def deliver(channel: Channel, event: dict[str, Any], retries: int, backoff_s: float,
            wait: Callable[[float], bool]) -> bool:
    """Send with retries; ``wait(seconds)`` sleeps and returns True when the service stops."""
    for attempt in range(retries + 1):
        try:
            channel.send(event)
            return True
        except DeliveryError as exc:
            if attempt == retries:
                log.error("job %d: %s notification not delivered after %d attempts: %s", event["job"]["id"],
                          channel.name, attempt + 1, exc)
                return False
            delay = min(MAX_BACKOFF_S, backoff_s * 2 ** attempt)
            log.warning("job %d: %s notification failed (%s); trying again in %.0f s", event["job"]["id"],
                        channel.name, exc, delay)
            if wait(delay):
                raise _Stopping from None
    return False


class _Stopping(Exception):
    """The service stops mid-retry: leave the job unmarked, so it is notified after the restart."""


class JobNotifier:
    """The notification thread's loop; one instance per service."""

    def __init__(self, store_path: Path, settings: Notify, stop: threading.Event, poll_s: float = 2.0) -> None:
        self.store_path = store_path
        self.settings = settings
        self.stop = stop
        self.poll_s = poll_s
        self.channels = channels(settings)

    def run(self) -> None:
        store = Store(self.store_path)
        try:
            while not self.stop.is_set():
                try:
                    self.tick(store)
                except _Stopping:
                    return
                self.stop.wait(self.poll_s)
        finally:
            store.close()

    def tick(self, store: Store) -> int:
        """Notify every finished job not notified yet; how many were handled."""
        handled = 0
        for job in store.to_notify():
            event = job_event(store, job)
            for channel in self.channels:
                deliver(channel, event, self.settings.retries, self.settings.backoff, self.stop.wait)
            store.set_notified(job.id)
            handled += 1
        return handled


def start(config: Config, stop: threading.Event) -> threading.Thread | None:
    """The notification thread, when any channel is configured."""
    notifier = JobNotifier(config.folders.database, config.notify, stop)
    if not notifier.channels:
        return None
    thread = threading.Thread(target=notifier.run, name="notify", daemon=True)
    thread.start()
    return thread

