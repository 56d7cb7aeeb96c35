"""``lipsyncd run``: the service's threads, signals and systemd conversation.

Three threads: intake (watch + claim), the runner (one job at a time) and this supervisor in
the main thread, which owns signals, tells systemd READY once recovery is done and the
watcher is up, reports the current job as STATUS, and pings the WATCHDOG only while both
worker threads are alive and have shown a sign of life recently. Signal handlers only set the
stop flag; the runner sees it, the engine aborts the current video within a second or so, the
job goes back to the queue. If the video does not stop within ``service.shutdown_timeout``
(a CPU batch of the network can take many seconds), the job is put back in the queue by this
thread and the process leaves at once with ``os._exit``: returning normally would run the
interpreter's and torch's teardown under a thread still inside torch, which aborts the
process ("terminate called without an active exception", status 134) and leaves the job
marked running.

At start, before anything else, the service takes the state folder's lock (one service per
database; see :mod:`lock`), opens and checks the database, and points every library cache
(numba's, torch's, matplotlib's) at its own cache folder: nothing depends on ``$HOME``. Any
problem there is a :class:`StartError` of one line, before systemd is told READY.

Nothing touches the share before :class:`ShareGuard` says it is there: a service started while
it is not mounted tells systemd READY with a STATUS saying so, and waits for it before recovery.

Optional helpers run beside them, each in a thread of its own that the factory never waits
for: the web dashboard (``web.enabled``), notifications (``notify:``) and clean-up
(``retention:``); the supervisor also keeps the share's status files current (``status.folder``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import notify, retention, slot_status
from .config import Config
from .engine_port import EngineFactory, open_engine
from .executor import EngineSpec
from .intake import Intake, recover
from .lock import AlreadyRunning, ServiceLock
from .overview import overview
from .progress import format_duration
from .runner import INTERRUPTED, Runner
from .share import NOTE_PREFIX, ShareError, ShareGuard
from .sharestatus import ShareStatus
from .states import JobState
from .store import Store, StoreError
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
INTAKE_STOP_S = 5.0
LIBRARY_CACHES = {"NUMBA_CACHE_DIR": "numba", "TORCH_HOME": "torch", "MPLCONFIGDIR": "matplotlib",
                  "XDG_CACHE_HOME": "xdg"}
"""Environment variable -> folder under the service's cache folder. numba's compiled functions
(the face-alignment backend's, librosa's when it was a dependency) are cached next to their
source or under ``$HOME``; a service user has neither writable, and the first job then failed
with an internal error."""


class StartError(RuntimeError):
    """The service cannot start; the message is the one line to show (what, where, what to do)."""


def prepare_local_folders(config: Config) -> None:
    """Create the folders on the service's own disk, with their parents (``make run`` starts
    from nothing)."""
    for path in (config.folders.state, config.engine.models_dir, config.engine.cache_dir):
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)


def prepare_folders(config: Config, share: ShareGuard | None = None) -> str | None:
    """Every folder the service uses; why the share is not there yet, or None."""
    prepare_local_folders(config)
    return prepare_share_folders(config, share)


def prepare_share_folders(config: Config, share: ShareGuard | None = None) -> str | None:
    """Create the share's folders where that is safe (:meth:`ShareGuard.prepare`). Why the
    share is not there yet, or None."""
    reason = (share or ShareGuard.for_config(config)).prepare()
    if reason is None:
        config.folders.processing.mkdir(exist_ok=True)
    return reason


def library_cache_root(config: Config) -> Path:
    """Where library caches go: the engine's cache folder, else one in the state folder."""
    return config.engine.cache_dir or config.folders.state / "cache"


def use_service_caches(config: Config, environ: MutableMapping[str, str] = os.environ) -> None:
    """Point library caches at the service's cache folder (a variable already set wins).
    Must run before numba or torch is imported: they read these once."""
    root = library_cache_root(config)
    for variable, folder in LIBRARY_CACHES.items():
        environ.setdefault(variable, str(root / folder))


def default_engine_factory(config: Config) -> EngineFactory:
    e = config.engine
    return lambda: open_engine(e.models_dir, e.device, e.cache_dir)


def run(config: Config, engine_factory: EngineFactory | None = None, notifier: Notifier | None = None,
        worker_engine: EngineSpec | None = None) -> int:
    """Run until SIGTERM/SIGINT; the exit status (non-zero when a worker thread died).
    ``worker_engine``: how worker processes build their engine (default: the config's)."""
    notifier = notifier or Notifier()
    use_service_caches(config)
    lock = ServiceLock(config.folders.state)
    store = _start(config, lock)
    stop = threading.Event()
    _install_signal_handlers(stop)
    share = ShareGuard.for_config(config)
    try:
        share_there = _wait_for_share(config, share, stop, notifier, lock)
    except ShareError as exc:
        store.close()
        lock.release()
        raise StartError(str(exc)) from None
    if not share_there:
        store.close()
        lock.release()
        return 0
    recover(store, config)

    watcher = InboxWatcher(config.folders.inbox, config.watch.mode, config.watch.poll_interval)
    watcher.start()
    intake = Intake(config, watcher, share=share)
    runner = Runner(config, engine_factory or default_engine_factory(config), stop, share=share,
                    worker_engine=worker_engine)
    threads = [threading.Thread(target=intake.run, args=(stop,), name="intake", daemon=True),
               threading.Thread(target=runner.run, name="runner", daemon=True)]
    for thread in threads:
        thread.start()
    web = _start_web(config)
    notify.start(config, stop)
    retention.start(config, stop)
    share_status = ShareStatus(config.status.folder) if config.status.folder else None
    queued = store.count_by_state().get(JobState.QUEUED, 0)
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
        if healthy:
            lock.beat()
        if healthy and notifier.watchdog_interval and now - last_ping >= notifier.watchdog_interval:
            notifier.watchdog()
            last_ping = now
        view = overview(store, limit=STATUS_JOBS, slots=slot_status.capacity(config))
        if share_status is not None and not share.check():  # a fresh look: never under a bare mountpoint
            share_status.update(view)
        text = f"{NOTE_PREFIX}{share.last_reason}" if share.last_reason else _status_line(view)
        if text != status:
            status = text
            notifier.status(text)

    notifier.stopping("Stopping: finishing or aborting the current video")
    log.info("stopping")
    threads[1].join(config.service.shutdown_timeout)
    threads[0].join(INTAKE_STOP_S)
    if web is not None:
        web.stop()
    watcher.stop()
    code = 1 if crashed else 0
    if any(t.is_alive() for t in threads):
        _leave_now(store, config, code)
    store.close()
    lock.release()
    return code


def _start(config: Config, lock: ServiceLock) -> Store:
    """Folders, the lock, a usable database: a :class:`StartError` of one line if any is missing."""
    try:
        prepare_local_folders(config)
    except OSError as exc:
        where = exc.filename or config.folders.state
        raise StartError(f"cannot create the folder {where} ({exc.strerror}); create it for the service's "
                         "user or fix the folders in the config (lipsyncd doctor checks them)") from None
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise StartError(str(exc)) from None
    except OSError as exc:
        raise StartError(f"cannot write {exc.filename or lock.path} ({exc.strerror}); give the service's user "
                         f"write access to the state folder {config.folders.state} and its files (chown -R, "
                         "chmod u+w, chattr -i)") from None
    try:
        store = Store(config.folders.database)
        store.check_integrity()
    except StoreError as exc:
        lock.release()
        raise StartError(str(exc)) from None
    return store


def _leave_now(store: Store, config: Config, code: int) -> None:
    """A worker did not stop in time (the runner deep in a torch call): put its job back in the
    queue, then end the process without interpreter teardown, which would abort under a live
    torch thread. The database is consistent at every commit, so nothing is lost."""
    for job in store.jobs_in(JobState.RUNNING):
        store.interrupt(job.id, INTERRUPTED)
    log.warning("the current video did not stop within %.0f s; its job was put back in the queue and runs "
                "again at the next start", config.service.shutdown_timeout)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait_for_share(config: Config, share: ShareGuard, stop: threading.Event, notifier: Notifier,
                    lock: ServiceLock) -> bool:
    """Prepare the share's folders; while the share is not there, say so and look again every
    second. READY goes out meanwhile, or systemd would count a slow NAS as a failed start, and
    the lock's heartbeat goes on (``lipsyncd status``: running). False if the service was
    stopped while waiting."""
    reason = prepare_share_folders(config, share)
    if reason is None:
        return True
    notifier.ready(f"{NOTE_PREFIX}{reason}")
    last_ping = 0.0
    while not stop.wait(SUPERVISOR_TICK):
        now = time.monotonic()
        if notifier.watchdog_interval and now - last_ping >= notifier.watchdog_interval:
            notifier.watchdog()
            last_ping = now
        lock.beat()
        if prepare_share_folders(config, share) is None:
            return True
    return False


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
    many wait (all of them: the view's rows stop at its limit, its counts do not)."""
    running = [r for r in view["jobs"] if r["state"] == JobState.RUNNING]
    waiting = view["counts"].get(JobState.QUEUED, 0)
    paused = "; queue paused" if view["paused"] else ""
    if running:
        r = running[0]
        speed = f" {r['fps']:.1f} fps" if r["fps"] else ""
        return (f"Job {r['id']} ({r['name']}): {r['current_video'] or '-'} {r['stage'] or ''} {r['percent']:.0f}%"
                f"{speed}, ETA {format_duration(r['job_eta_s'])}, videos {r['videos_done']}; {waiting} queued{paused}")
    return (f"Idle; {waiting} queued" if waiting else "Idle") + paused
