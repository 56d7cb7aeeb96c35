"""The ``lipsyncd`` command: run the service and operate it.

Every command reads the same config (``--config``, else ``$LIPSYNCD_CONFIG``, else built-in
defaults on ``./var``) and fails at once, with the key and the allowed values, when it is
invalid. ``status``, ``retry`` and ``cancel`` only touch the database and the folders, so they
work while the service runs (or not) without importing the engine. ``status`` and ``doctor``
only look: they create no folder and no database, and say where they looked.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from . import config as config_module
from . import lock, logs, operations, slot_status
from .config import Config, ConfigError
from .lock import ServiceState
from .slot_status import format_slots
from .store import NoDatabase, Store, StoreError, unusable

STATUS_COLUMNS = (("id", "ID"), ("name", "JOB"), ("state", "STATE"), ("videos_done", "VIDEOS"),
                  ("percent", "%"), ("current_video", "NOW"), ("message", "MESSAGE"))
HEARTBEAT_STALE_S = 30.0
"""The service touches its heartbeat every second while its threads are healthy; this much
silence means a worker is stuck (systemd's watchdog restarts such a service)."""


@click.group(help="lipsyncd: drop job folders into the inbox, get lip-synced videos in the outbox.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config file (default: $LIPSYNCD_CONFIG, else built-in defaults on ./var).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    try:
        loaded = config_module.load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.ensure_object(dict)
    ctx.obj["config"] = loaded
    ctx.obj["models_dir"] = loaded.engine.models_dir


def _config(ctx: click.Context) -> Config:
    return ctx.obj["config"]


def _store(ctx: click.Context) -> Store:
    """The database for ``retry`` and ``cancel``: it must exist (they never create one)."""
    try:
        return Store(_config(ctx).folders.database, create=False)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command(help="Run the service in the foreground (what systemd starts).")
@click.pass_context
def run(ctx: click.Context) -> None:
    from . import service

    cfg = _config(ctx)
    logs.setup(cfg.service.log_level)
    try:
        code = service.run(cfg)
    except service.StartError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@cli.command(help="Show whether the service runs, and its running, queued and recent jobs.")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"service": {...}, "database": path, "slots": [...], "jobs": [one object per job]}.')
@click.option("--limit", default=20, show_default=True, help="How many jobs to show.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, limit: int) -> None:
    cfg = _config(ctx)
    service = lock.probe(cfg.folders.state)
    slots = slot_status.read(cfg.folders.state) if service.running else []
    rows: list[dict[str, Any]] = []
    missing = None
    try:
        store = Store(cfg.folders.database, readonly=True)
    except NoDatabase as exc:
        missing = f"{exc} (config: {cfg.source})"
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    else:
        try:
            rows = store.status(limit)
        except sqlite3.Error as exc:  # a damaged page the open did not touch
            raise click.ClickException(str(unusable(store.path, exc))) from None
        finally:
            store.close()
    if as_json:
        health = {**service.as_dict(), "healthy": _healthy(service)}
        click.echo(json.dumps({"service": health, "database": str(cfg.folders.database), "slots": slots,
                               "jobs": rows}, indent=2, ensure_ascii=False))
        return
    click.echo(service_line(service))
    if missing:
        click.echo(missing[0].upper() + missing[1:])
    elif not rows:
        click.echo(f"No jobs yet. Drop a job folder into {cfg.folders.inbox}")
    else:
        click.echo(format_table(rows))
    if slots:
        click.echo(format_slots(slots))


def _healthy(service: ServiceState) -> bool:
    return service.running and (service.heartbeat_age_s or 0.0) <= HEARTBEAT_STALE_S


def service_line(service: ServiceState) -> str:
    """``service: running (pid 812), last heartbeat 1 s ago`` — or why it is not well."""
    if not service.running:
        return "service: not running"
    who = f"pid {service.pid}" if service.pid else "pid unknown"
    ago = _ago(service.heartbeat_age_s or 0.0)
    if _healthy(service):
        return f"service: running ({who}), last heartbeat {ago} ago"
    return (f"service: running ({who}) but NOT healthy: last heartbeat {ago} ago (a worker is stuck; "
            "see journalctl -u lipsyncd)")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def format_table(rows: list[dict[str, Any]], message_width: int = 60) -> str:
    """A plain aligned table; long names and messages are shortened with an ellipsis."""
    def cell(key: str, value: Any) -> str:
        text = "" if value is None else f"{value:.0f}" if key == "percent" else str(value)
        text = " ".join(text.split())
        limit = message_width if key == "message" else 30
        return text if len(text) <= limit else text[: limit - 1] + "…"

    table = [[title for _, title in STATUS_COLUMNS]]
    table += [[cell(key, row.get(key)) for key, _ in STATUS_COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(STATUS_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)


@cli.command(help="Run a failed or cancelled job again (JOB: id or folder name).")
@click.argument("job")
@click.pass_context
def retry(ctx: click.Context, job: str) -> None:
    store = _store(ctx)
    try:
        click.echo(operations.retry(store, _config(ctx), job))
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@cli.command(help="Cancel a queued or running job (JOB: id or folder name); it is moved to error/.")
@click.argument("job")
@click.pass_context
def cancel(ctx: click.Context, job: str) -> None:
    store = _store(ctx)
    try:
        click.echo(operations.cancel(store, job))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@cli.command(help="Check codecs, GPU, models, folders and free disk; say what to fix.")
@click.pass_context
def doctor(ctx: click.Context) -> None:
    from .doctor import FAIL, run_checks

    checks = run_checks(_config(ctx))
    for check in checks:
        click.echo(f"[{check.level:>4}] {check.name}: {check.detail}")
        if check.fix:
            click.echo(f"       fix: {check.fix}")
    failed = [c for c in checks if c.level == FAIL]
    if failed:
        click.echo(f"\n{len(failed)} problem(s) to fix.")
        sys.exit(1)
    click.echo("\nAll checks passed.")


def main() -> None:
    """Console entry point; the engine's commands join here so importing this module stays cheap."""
    from lipsyncd.engine.cli_models import models_group
    from lipsyncd.engine.cli_render import render_command

    cli.add_command(render_command)
    cli.add_command(models_group)
    cli(obj={})
