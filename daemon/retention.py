"""Clean-up after a configurable age: result folders, error folders, and the job history.

Off unless ``retention.outbox_days``, ``error_days`` or ``history_days`` is set. Only folders
the database recorded for a finished job are removed, and only if they still lie directly in
the outbox or error folder, so nothing a person put there by hand, moved or renamed is
touched. A removed folder is noted on the job (the history still shows it ran). History rows
(jobs and their videos) older than ``history_days`` are deleted; their folders, if still
there, are left alone. Runs at start and then every ``INTERVAL_S`` in a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from .config import Config, Retention
from .progress import utc_now
from .publish import remove_tree
from .store import Store

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0


@dataclass
class Pruned:
    folders: list[Path] = field(default_factory=list)
    jobs: int = 0


def prune(store: Store, config: Config, now: datetime | None = None) -> Pruned:
    """Remove what is older than the configured ages; what was removed."""
    now = now or utc_now()
    settings, pruned = config.retention, Pruned()
    for column, parent, days in (("outbox_path", config.folders.outbox, settings.outbox_days),
                                 ("error_path", config.folders.error, settings.error_days)):
        if days is None:
            continue
        for job in store.finished_before(_cutoff(now, days), column):
            folder = Path(getattr(job, column))
            if folder.parent != parent or not folder.is_dir() or folder.is_symlink():
                continue
            remove_tree(folder)
            if not folder.exists():
                pruned.folders.append(folder)
                store.set_note(job.id, f"{folder.name} removed from {parent.name}/ after {days:g} days "
                                       "(retention).")
                log.info("job %d (%s): removed %s (older than %g days)", job.id, job.name, folder, days)
    if settings.history_days is not None:
        pruned.jobs = store.delete_finished_before(_cutoff(now, settings.history_days))
        if pruned.jobs:
            log.info("removed %d job(s) older than %g days from the history", pruned.jobs, settings.history_days)
    return pruned


def _cutoff(now: datetime, days: float) -> str:
    """The database's time text ``days`` before ``now``."""
    return (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")


def _enabled(settings: Retention) -> bool:
    return any(d is not None for d in (settings.outbox_days, settings.error_days, settings.history_days))


def start(config: Config, stop: threading.Event) -> threading.Thread | None:
    """The clean-up thread, when any age is configured."""
    if not _enabled(config.retention):
        return None

    def loop() -> None:
        store = Store(config.folders.database)
        try:
            while True:
                try:
                    prune(store, config)
                except Exception:  # noqa: BLE001 - clean-up must never stop the service
                    log.exception("retention clean-up failed; trying again in an hour")
                if stop.wait(INTERVAL_S):
                    return
        finally:
            store.close()

    thread = threading.Thread(target=loop, name="retention", daemon=True)
    thread.start()
    return thread
