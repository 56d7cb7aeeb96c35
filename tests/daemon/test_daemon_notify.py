"""Notifications: webhook, command and Apprise against local receivers; retries with backoff."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from lipsyncd.daemon import notify
from lipsyncd.daemon.config import Notify
from lipsyncd.daemon.store import Store


class Receiver:
    """A local HTTP server that answers 500 to the first ``failures`` requests, then 200."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(500 if len(receiver.bodies) <= receiver.failures else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2)
    yield r
    r.close()


def finished_job(store: Store, name: str = "Interview 🎬") -> int:
    job = store.begin_intake(name, store.path.parent / ".processing")
    store.enqueue(job.id, audio="s.wav", videos=[("a.mp4", "a.mp4", None)], naming="{stem}.mp4", priority=0,
                  options={}, content_hash="h")
    store.claim(job.id)
    (task,) = store.tasks(job.id)
    store.task_started(task.id)
    store.task_finished(task.id, "done")
    store.begin_filing(job.id, "done", None, store.path.parent / "outbox" / name, None)
    store.finish(job.id)
    return job.id


def settings(**values) -> Notify:
    return Notify(**{"webhook": None, "command": (), "apprise": (), "retries": 3, "backoff": 0.01, **values})


def test_a_failing_webhook_is_retried_with_growing_delays(store, receiver):
    job_id = finished_job(store)
    waits: list[float] = []
    notifier = notify.JobNotifier(store.path, settings(webhook=receiver.url), threading.Event())
    notifier.stop.wait = lambda s: waits.append(s) or False  # type: ignore[method-assign]
    assert notifier.tick(store) == 1
    assert waits == [0.01, 0.02] and len(receiver.bodies) == 3
    event = json.loads(receiver.bodies[-1])
    assert event["event"] == "job.done" and event["job"]["name"] == "Interview 🎬"
    assert event["job"]["finished_at"].endswith("+00:00") and event["videos"][0]["state"] == "done"
    assert notifier.tick(store) == 0 and store.job(job_id).notified == 1  # once only


def test_delivery_gives_up_after_the_retries_and_the_queue_moves_on(store, caplog):
    dead = Receiver(failures=99)
    try:
        finished_job(store)
        notifier = notify.JobNotifier(store.path, settings(webhook=dead.url, retries=2), threading.Event())
        notifier.stop.wait = lambda s: False  # type: ignore[method-assign]
        assert notifier.tick(store) == 1
    finally:
        dead.close()
    assert len(dead.bodies) == 3
    assert any("not delivered after 3 attempts" in r.message for r in caplog.records)


def test_a_stop_during_the_backoff_leaves_the_job_to_notify_after_the_restart(store, receiver):
    job_id = finished_job(store)
    notifier = notify.JobNotifier(store.path, settings(webhook=receiver.url), threading.Event())
    notifier.stop.wait = lambda s: True  # type: ignore[method-assign]  # the stop arrives during the first delay
    notifier.run()  # returns at once instead of finishing the retries
    assert len(receiver.bodies) == 1 and store.job(job_id).notified == 0
    store.set_notified(job_id)
    store.requeue(job_id, "again")  # a retried job is notified again when it finishes
    assert store.job(job_id).notified == 0


def test_the_post_job_command_gets_json_and_environment(store, tmp_path):
    finished_job(store, "Promo")
    out = tmp_path / "seen.json"
    script = ("import json, os, sys; e = json.load(sys.stdin); "
              f"open({str(out)!r}, 'w').write(json.dumps([e['event'], os.environ['LIPSYNCD_JOB_NAME'], "
              "os.environ['LIPSYNCD_JOB_OUTBOX']]))")
    notifier = notify.JobNotifier(store.path, settings(command=(sys.executable, "-c", script)), threading.Event())
    assert notifier.tick(store) == 1
    event, name, outbox = json.loads(out.read_text())
    assert (event, name) == ("job.done", "Promo") and outbox.endswith("outbox/Promo")


def test_a_failing_command_is_retried():
    command = notify.Command([sys.executable, "-c", "import sys; sys.exit(3)"])
    event = {"job": {"id": 1, "name": "x", "state": "done", "outbox": None, "error_folder": None}}
    calls = []
    assert not notify.deliver(command, event, retries=1, backoff_s=0.5, wait=lambda s: calls.append(s) or False)
    assert calls == [0.5]


def test_apprise_delivers_to_a_json_url(store, receiver):
    finished_job(store, "Teaser")
    url = receiver.url.replace("http://", "json://")
    notifier = notify.JobNotifier(store.path, settings(apprise=(url,), retries=3), threading.Event())
    notifier.stop.wait = lambda s: False  # type: ignore[method-assign]
    assert notifier.tick(store) == 1
    message = json.loads(receiver.bodies[-1])
    assert message["title"] == "lipsyncd: Teaser done" and "1 of 1 videos done" in message["message"]


def test_no_channel_configured_starts_no_thread(cfg):
    assert notify.start(cfg, threading.Event()) is None
