"""``lipsyncd run``: the service's threads, signals and systemd conversation.

Three threads: intake (watch + claim), the runner (one job at a time) and this supervisor in
the main thread, which owns signals, tells systemd READY once recovery is done and the
watcher is up, reports the current job as STATUS, and pings the WATCHDOG only while both
worker threads are alive and have shown a sign of life recently. Signal handlers only set the
stop flag; the runner sees it, the engine aborts the current video within a second or so, the
job goes back to the queue. If the video does not stop within ``service.shutdown_timeout``
the process exits anyway: the job is still marked running, and the next start re-queues it.

Nothing touches the share before :class:`ShareGuard` says it is there: a service started while
it is not mounted tells systemd READY with a STATUS saying so, and waits for it before recovery.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from .config import Config
from .engine_port import EngineFactory, open_engine
from .intake import Intake, recover
from .runner import Runner
from .share import NOTE_PREFIX, ShareError, ShareGuard
from .store import Store
from .systemd import Notifier
from .watcher import InboxWatcher

log = logging.getLogger(__name__)

SUPERVISOR_TICK = 1.0
RUNNER_STALL_S = 900.0
"""No progress callback for this long during a render counts as hung (the watchdog stops)."""
INTAKE_STALL_S = 600.0
"""Hashing a large video over a slow share is the longest thing intake does in one round."""


def prepare_folders(config: Config, share: ShareGuard | None = None) -> str | None:
    """Create the local folders, with their parents (``make run`` starts from nothing), then the
    share's folders where that is safe (:meth:`ShareGuard.prepare`). Why the share is not
    there yet, or None."""
    for path in (config.folders.state, config.engine.models_dir, config.engine.cache_dir):
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
    reason = (share or ShareGuard.for_config(config)).prepare()
    if reason is None:
        config.folders.processing.mkdir(exist_ok=True)
    return reason


def default_engine_factory(config: Config) -> EngineFactory:
    e = config.engine
    return lambda: open_engine(e.models_dir, e.device, e.cache_dir)


def run(config: Config, engine_factory: EngineFactory | None = None, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM/SIGINT; the exit status (non-zero when a worker thread died)."""
    notifier = notifier or Notifier()
    stop = threading.Event()
    _install_signal_handlers(stop)
    share = ShareGuard.for_config(config)
    try:
        if not _wait_for_share(config, share, stop, notifier):
            return 0
    except ShareError as exc:
        log.critical("%s", exc)
        return 1
    store = Store(config.folders.database)
    recover(store, config)

    watcher = InboxWatcher(config.folders.inbox, config.watch.mode, config.watch.poll_interval)
    watcher.start()
    intake = Intake(config, watcher, share=share)
    runner = Runner(config, engine_factory or default_engine_factory(config), stop, share=share)
    threads = [threading.Thread(target=intake.run, args=(stop,), name="intake", daemon=True),
               threading.Thread(target=runner.run, name="runner", daemon=True)]
    for thread in threads:
        thread.start()
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
        text = f"{NOTE_PREFIX}{share.last_reason}" if share.last_reason else _status_line(store)
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
    watcher.stop()
    store.close()
    return 1 if crashed else 0


def _wait_for_share(config: Config, share: ShareGuard, stop: threading.Event, notifier: Notifier) -> bool:
    """Prepare the folders; while the share is not there, say so and look again every second.
    READY goes out meanwhile, or systemd would count a slow NAS as a failed start. False if
    the service was stopped while waiting."""
    reason = prepare_folders(config, share)
    if reason is None:
        return True
    notifier.ready(f"{NOTE_PREFIX}{reason}")
    last_ping = 0.0
    while not stop.wait(SUPERVISOR_TICK):
        now = time.monotonic()
        if notifier.watchdog_interval and now - last_ping >= notifier.watchdog_interval:
            notifier.watchdog()
            last_ping = now
        if prepare_folders(config, share) is None:
            return True
    return False


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()  # only a flag: logging here could deadlock on the logging lock

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _status_line(store: Store) -> str:
    """The one line ``systemctl status`` shows: the running job, or how many wait."""
    rows = store.status(limit=20)
    running = [r for r in rows if r["state"] == "running"]
    waiting = sum(r["state"] == "queued" for r in rows)
    if running:
        r = running[0]
        return (f"Job {r['id']} ({r['name']}): {r['current_video'] or '-'} {r['percent']:.0f}%, "
                f"videos {r['videos_done']}; {waiting} queued")
    return f"Idle; {waiting} queued" if waiting else "Idle"

