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
import time
from pathlib import Path
from typing import Any

import click

from . import config as config_module
from . import lock, logs, operations, slot_status
from .config import Config, ConfigError
from .lock import ServiceState
from .overview import overview
from .progress import format_duration
from .slot_status import format_slots
from .states import JobState
from .store import NoDatabase, Store, StoreError, unusable

STATUS_COLUMNS = (("id", "ID"), ("name", "JOB"), ("state", "STATE"), ("videos_done", "VIDEOS"),
                  ("percent", "%"), ("current_video", "NOW"), ("speed", "FPS"), ("eta", "ETA"),
                  ("when", "WHEN (UTC)"), ("message", "MESSAGE"))
"""``speed``, ``eta`` and ``when`` are derived from the overview (see :func:`_derived`)."""
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


@cli.command(help="Show whether the service runs, and its running, queued and recent jobs, with speed, "
                  "ETA and expected start times (ISO 8601, UTC).")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"service": {...}, "database": path, "paused": bool, "slots": [...], '
                   '"jobs": [one object per job]}.')
@click.option("--limit", default=20, show_default=True, help="How many jobs to show.")
@click.option("--watch", "watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, limit: int, watch: bool, interval: float) -> None:
    cfg = _config(ctx)
    try:
        while True:
            text = _status_text(cfg, limit, as_json)
            if not watch:
                click.echo(text)
                return
            if sys.stdout.isatty():
                click.echo("\x1b[H\x1b[J", nl=False)  # cursor home, clear below: redraw in place
            click.echo(f"{text}\n\n(refreshing every {interval:g} s; Ctrl-C to stop)")
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _status_text(cfg: Config, limit: int, as_json: bool) -> str:
    """The service's health, then the jobs; read-only: before the first start it says where it
    looked instead of creating a database."""
    service = lock.probe(cfg.folders.state)
    view: dict[str, Any] | None = None
    slots = slot_status.read(cfg.folders.state) if service.running else []
    missing = None
    try:
        store = Store(cfg.folders.database, readonly=True)
    except NoDatabase as exc:
        missing = f"{exc} (config: {cfg.source})"
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    else:
        try:
            view = overview(store, limit, slots=slot_status.capacity(cfg))
        except sqlite3.Error as exc:  # a damaged page the open did not touch
            raise click.ClickException(str(unusable(store.path, exc))) from None
        finally:
            store.close()
    rows = view["jobs"] if view else []
    paused = bool(view and view["paused"])
    if as_json:
        health = {**service.as_dict(), "healthy": _healthy(service)}
        return json.dumps({"service": health, "database": str(cfg.folders.database), "paused": paused,
                           "slots": slots, "jobs": rows}, indent=2, ensure_ascii=False)
    lines = [service_line(service)]
    if missing:
        lines.append(missing[0].upper() + missing[1:])
        return "\n".join(lines)
    if paused:
        lines.append("Queue PAUSED: no new job starts until `lipsyncd resume`.")
    lines.append(format_table(rows) if rows else f"No jobs yet. Drop a job folder into {cfg.folders.inbox}")
    if slots:
        lines.append(format_slots(slots))
    return "\n".join(lines)


def _derived(row: dict[str, Any]) -> dict[str, Any]:
    """The table's computed cells: speed and stage, time left, and when it starts or ends."""
    state = row["state"]
    extra: dict[str, str | None] = {"speed": None, "eta": None, "when": None}
    if state == JobState.RUNNING:
        fps = row.get("fps")
        extra["speed"] = f"{row.get('stage') or ''} {fps:.1f}".strip() if fps else row.get("stage")
        extra["eta"] = format_duration(row.get("job_eta_s"))
        extra["when"] = _clock(row.get("expected_finish"))
    elif state == JobState.QUEUED:
        extra["eta"] = f"#{row['queue_position']}" if row.get("queue_position") else None
        extra["when"] = _clock(row.get("expected_start")) or "unknown"
    elif state == JobState.FILING:
        extra["speed"] = JobState.FILING
    else:
        extra["when"] = _clock(row.get("finished_at"))
    return extra


def _clock(moment: str | None) -> str | None:
    """An ISO time without its zone and seconds for the table (the header says UTC)."""
    return moment[:16].replace("T", " ") if moment else None


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
    rows = [{**row, **_derived(row)} for row in rows]

    def cell(key: str, value: Any) -> str:
        text = "" if value is None else f"{value:.0f}" if key == "percent" else str(value)
        text = " ".join(text.split())
        limit = message_width if key == "message" else 30
        return text if len(text) <= limit else text[: limit - 1] + "…"

    table = [[title for _, title in STATUS_COLUMNS]]
    table += [[cell(key, row.get(key)) for key, _ in STATUS_COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(STATUS_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


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


@cli.command(help="Pause the queue: the running job finishes, no new job starts (kept across restarts).")
@click.pass_context
def pause(ctx: click.Context) -> None:
    _set_paused(ctx, True)
    click.echo("Queue paused: the running job (if any) finishes, then nothing starts until `lipsyncd resume`.")


@cli.command(help="Resume a paused queue.")
@click.pass_context
def resume(ctx: click.Context) -> None:
    _set_paused(ctx, False)
    click.echo("Queue resumed: the next job starts within seconds.")


def _set_paused(ctx: click.Context, paused: bool) -> None:
    store = _store(ctx)
    try:
        store.set_paused(paused)
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
