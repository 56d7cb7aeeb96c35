"""``lipsyncd run``: the service's threads, signals and systemd conversation.

Three threads: intake (watch + claim), the runner (one job at a time) and this supervisor in
the main thread, which owns signals, tells systemd READY once recovery is done and the
watcher is up, reports the current job as STATUS, and pings the WATCHDOG only while both
worker threads are alive and have shown a sign of life recently. Signal handlers only set the
stop flag; the runner sees it, the engine aborts the current video within a second or so, the
job goes back to the queue. If the video does not stop within ``service.shutdown_timeout``
the process exits anyway: the job is still marked running, and the next start re-queues it.

Optional helpers run beside them, each in a thread of its own that the factory never waits
for: the web dashboard (``web.enabled``), notifications (``notify:``) and clean-up
(``retention:``); the supervisor also keeps the share's status files current (``status.folder``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import notify, retention
from .config import Config
from .engine_port import EngineFactory, open_engine
from .intake import Intake, recover
from .overview import overview
from .progress import format_duration
from .runner import Runner
from .sharestatus import ShareStatus
from .store import Store
from .systemd import Notifier
from .watcher import InboxWatcher

if TYPE_CHECKING:  # the dashboard's packages are an optional extra
    from .web.server import WebServer

log = logging.getLogger(__name__)

SUPERVISOR_TICK = 1.0
RUNNER_STALL_S = 900.0
"""No progress callback for this long during a render counts as hung (the watchdog stops)."""
STATUS_JOBS = 20
"""Jobs in the STATUS line's count and the share's status files (running, queued, then recent)."""
INTAKE_STALL_S = 600.0
"""Hashing a large video over a slow share is the longest thing intake does in one round."""


def prepare_folders(config: Config) -> None:
    """Create the folders the service writes to (``make run`` starts from nothing)."""
    f = config.folders
    for path in (f.inbox, f.outbox, f.error, f.state, f.processing, config.engine.models_dir):
        path.mkdir(parents=True, exist_ok=True)
    if config.engine.cache_dir is not None:
        config.engine.cache_dir.mkdir(parents=True, exist_ok=True)


def default_engine_factory(config: Config) -> EngineFactory:
    e = config.engine
    return lambda: open_engine(e.models_dir, e.device, e.cache_dir)


def run(config: Config, engine_factory: EngineFactory | None = None, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM/SIGINT; the exit status (non-zero when a worker thread died)."""
    notifier = notifier or Notifier()
    prepare_folders(config)
    store = Store(config.folders.database)
    recover(store, config)
    stop = threading.Event()
    _install_signal_handlers(stop)

    watcher = InboxWatcher(config.folders.inbox, config.watch.mode, config.watch.poll_interval)
    watcher.start()
    intake = Intake(config, watcher)
    runner = Runner(config, engine_factory or default_engine_factory(config), stop)
    threads = [threading.Thread(target=intake.run, args=(stop,), name="intake", daemon=True),
               threading.Thread(target=runner.run, name="runner", daemon=True)]
    for thread in threads:
        thread.start()
    web = _start_web(config)
    notify.start(config, stop)
    retention.start(config, stop)
    share_status = ShareStatus(config.status.folder) if config.status.folder else None
    queued = len(store.jobs_in("queued"))
    notifier.ready(f"Watching {config.folders.inbox}; {queued} job(s) queued")
    log.info("ready: watching %s, results to %s (%d job(s) queued)", config.folders.inbox, config.folders.outbox,
             queued)

    status = ""
    last_ping = 0.0
    crashed = False
    while not stop.wait(SUPERVISOR_TICK):
        if not all(t.is_alive() for t in threads):
            log.critical("a worker thread stopped unexpectedly; exiting so systemd restarts the service")
            crashed = True
            stop.set()
            break
        now = time.monotonic()
        healthy = now - runner.heartbeat < RUNNER_STALL_S and now - intake.heartbeat < INTAKE_STALL_S
        if healthy and notifier.watchdog_interval and now - last_ping >= notifier.watchdog_interval:
            notifier.watchdog()
            last_ping = now
        view = overview(store, limit=STATUS_JOBS)
        if share_status is not None:
            share_status.update(view)
        text = _status_line(view)
        if text != status:
            status = text
            notifier.status(text)

    notifier.stopping("Stopping: finishing or aborting the current video")
    log.info("stopping")
    threads[1].join(config.service.shutdown_timeout)
    if threads[1].is_alive():
        log.warning("the current video did not stop within %.0f s; its job runs again at the next start",
                    config.service.shutdown_timeout)
    threads[0].join(5)
    if web is not None:
        web.stop()
    watcher.stop()
    store.close()
    return 1 if crashed else 0


def _start_web(config: Config) -> WebServer | None:
    """The dashboard's server thread when ``web.enabled``; None when off or not installed."""
    if not config.web.enabled:
        return None
    try:
        from .web.server import WebServer
    except ImportError as exc:
        log.error("web.enabled is true but the dashboard's packages are missing (%s); install them with "
                  "pip install 'lipsyncd[web]'. The service runs without the dashboard.", exc.name)
        return None
    server = WebServer(config)
    server.start()
    log.info("dashboard on %s", server.url)
    return server


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()  # only a flag: logging here could deadlock on the logging lock

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _status_line(view: dict[str, Any]) -> str:
    """The one line ``systemctl status`` shows: the running job with stage, speed and ETA, or how
    many wait."""
    rows = view["jobs"]
    running = [r for r in rows if r["state"] == "running"]
    waiting = sum(r["state"] == "queued" for r in rows)
    paused = "; queue paused" if view["paused"] else ""
    if running:
        r = running[0]
        speed = f" {r['fps']:.1f} fps" if r["fps"] else ""
        return (f"Job {r['id']} ({r['name']}): {r['current_video'] or '-'} {r['stage'] or ''} {r['percent']:.0f}%"
                f"{speed}, ETA {format_duration(r['job_eta_s'])}, videos {r['videos_done']}; {waiting} queued{paused}")
    return (f"Idle; {waiting} queued" if waiting else "Idle") + paused
