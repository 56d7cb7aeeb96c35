"""Retention: old result and error folders and history rows go; anything else stays."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from lipsyncd.daemon import retention
from lipsyncd.daemon.config import Config, Retention
from lipsyncd.daemon.store import Store

NOW = datetime(2026, 3, 31, 12, 0, 0, tzinfo=timezone.utc)


def finished(store: Store, cfg: Config, name: str, day: str, state: str = "done") -> int:
    outbox = cfg.folders.outbox / name if state == "done" else None
    error = cfg.folders.error / name if state != "done" else None
    for folder in (outbox, error):
        if folder is not None:
            folder.mkdir()
            (folder / "result.mp4").write_bytes(b"x")
    return store.db.execute("INSERT INTO jobs (name, state, work_dir, outbox_path, error_path, finished_at) "
                            "VALUES (?, ?, 'w', ?, ?, ?)",
                            [name, state, str(outbox) if outbox else None, str(error) if error else None,
                             f"{day} 10:00:00"]).lastrowid


def with_retention(cfg: Config, **days) -> Config:
    return dataclasses.replace(cfg, retention=Retention(**{"outbox_days": None, "error_days": None,
                                                           "history_days": None, **days}))


def test_nothing_is_removed_by_default(cfg, store):
    finished(store, cfg, "ancient", "2020-01-01")
    assert retention.prune(store, cfg, NOW) == retention.Pruned()
    assert (cfg.folders.outbox / "ancient").is_dir()
    assert retention.start(cfg, None) is None  # no thread either


def test_old_folders_go_recent_ones_and_unknown_ones_stay(cfg, store):
    old = finished(store, cfg, "old", "2026-03-01")
    finished(store, cfg, "recent", "2026-03-29")
    failed = finished(store, cfg, "old failure", "2026-03-01", state="failed")
    (cfg.folders.outbox / "made by hand").mkdir()
    moved = finished(store, cfg, "moved", "2026-03-01")
    (cfg.folders.outbox / "moved").rename(cfg.folders.outbox / "renamed by a user")
    pruned = retention.prune(store, with_retention(cfg, outbox_days=7), NOW)
    assert pruned.folders == [cfg.folders.outbox / "old"]
    assert sorted(p.name for p in cfg.folders.outbox.iterdir()) == ["made by hand", "recent", "renamed by a user"]
    assert (cfg.folders.error / "old failure").is_dir()  # error_days not set
    assert "removed from outbox/ after 7 days" in store.job(old).note
    assert store.job(moved).note is None
    retention.prune(store, with_retention(cfg, error_days=7), NOW)
    assert not (cfg.folders.error / "old failure").exists() and store.job(failed).state == "failed"


def test_old_history_rows_are_deleted_with_their_videos(cfg, store):
    old = finished(store, cfg, "old", "2026-01-01")
    store.db.execute("INSERT INTO tasks (job_id, position, video, output_name) VALUES (?, 0, 'v', 'v')", [old])
    finished(store, cfg, "recent", "2026-03-30")
    pruned = retention.prune(store, with_retention(cfg, history_days=30), NOW)
    assert pruned.jobs == 1 and [j.name for j in store.history()] == ["recent"]
    assert store.db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
    assert (cfg.folders.outbox / "old").is_dir()  # history only: the folder is left alone
