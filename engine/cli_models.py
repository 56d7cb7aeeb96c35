"""``lipsyncd models``: list, fetch, verify and install the model files (Wav2Lip, MuseTalk).

The daemon's CLI mounts this group (``cli.add_command(models_group)``). The models folder is,
first found wins: ``--models-dir``, the ``LIPSYNCD_MODELS_DIR`` environment variable, the
daemon's configured folder (``ctx.obj["models_dir"]``, when the daemon CLI sets it), ``./var/models``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import models
from .errors import ModelError

DEFAULT_MODELS_DIR = Path("var/models")
_NAMES = click.Choice(list(models.REGISTRY))
_NAMES_OR_BUNDLES = click.Choice([*models.REGISTRY, *models.BUNDLES])


def models_dir_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        envvar="LIPSYNCD_MODELS_DIR", show_envvar=True,
        help="Folder holding the model files [default: the service's configured folder, "
             "else ./var/models].")(command)


def _json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(command)


def resolve_models_dir(models_dir: Path | None) -> Path:
    """The models folder a command should use, given its ``--models-dir`` value (which already
    includes ``LIPSYNCD_MODELS_DIR``): that, else the daemon's configured one, else the default."""
    if models_dir is not None:
        return models_dir
    context = click.get_current_context(silent=True)
    obj = context.obj if context else None
    if isinstance(obj, dict) and obj.get("models_dir"):
        return Path(obj["models_dir"])
    return DEFAULT_MODELS_DIR


def _print_statuses(statuses: list[models.ModelStatus], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in statuses], indent=2))
        return
    for s in statuses:
        size = f"{s.size / 1e6:.1f} MB" if s.size is not None else "-"
        state = "ok" if s.ok else ("missing" if not s.present else "BAD")
        click.echo(f"{s.name:<25} {state:<8} {size:>10}  checksum {s.checksum:<8} {s.path}")
        if s.problem and s.present:
            click.echo(f"{'':<25} {s.problem}")


@click.group("models")
def models_group() -> None:
    """Show, download, verify and install the model files (Wav2Lip; MuseTalk: `musetalk` names all seven)."""


@models_group.command("list")
@models_dir_option
@_json_option
def list_command(models_dir: Path | None, as_json: bool) -> None:
    """Every known model: present or not, size, and whether its checksum matches."""
    _print_statuses(models.list_models(resolve_models_dir(models_dir)), as_json)


@models_group.command("fetch")
@click.argument("name", type=_NAMES_OR_BUNDLES)
@click.option("--url", default=None, help="Download from this address instead of the built-in mirrors "
                                          "(one model only).")
@models_dir_option
def fetch_command(name: str, url: str | None, models_dir: Path | None) -> None:
    """Download model NAME, or every model of a bundle such as `musetalk` (resumes an
    interrupted download) and check it."""
    members = models.bundle_members(name)
    if url and len(members) > 1:
        raise click.ClickException(f"--url names one file, but {name} stands for {len(members)} models; "
                                   "fetch them one by one to give each its address.")
    for member in members:
        try:
            path = models.fetch(resolve_models_dir(models_dir), member, url=url, progress=_Progress(member))
        except ModelError as error:
            raise click.ClickException(str(error)) from error
        click.echo(f"{member}: ready at {path}")


@models_group.command("verify")
@click.argument("name", type=_NAMES_OR_BUNDLES, required=False)
@models_dir_option
@_json_option
def verify_command(name: str | None, models_dir: Path | None, as_json: bool) -> None:
    """Check model NAME or bundle (default: every present model); exit status 1 if one is wrong."""
    folder = resolve_models_dir(models_dir)
    if name:
        statuses = [models.verify(folder, member) for member in models.bundle_members(name)]
    else:
        statuses = [models.verify(folder, s.name) for s in models.list_models(folder) if s.present]
        if not statuses:
            raise click.ClickException(f"No model file is present in {folder}.")
    _print_statuses(statuses, as_json)
    if not all(s.ok for s in statuses):
        sys.exit(1)


@models_group.command("install")
@click.argument("name", type=_NAMES)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@models_dir_option
def install_command(name: str, file: Path, models_dir: Path | None) -> None:
    """Copy a model FILE obtained elsewhere into place as model NAME, after checking it."""
    try:
        path = models.install_file(resolve_models_dir(models_dir), name, file)
    except ModelError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{name}: installed at {path}")


class _Progress:
    """Download progress on stderr: one updating line on a terminal, every 10 % in a log."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int | None) -> None:
        if total:
            step = done * 100 // total if self.tty else done * 10 // total * 10
            text = f"{self.name}: {done / 1e6:.1f} / {total / 1e6:.1f} MB ({step}%)"
        else:
            step = done >> 24 if self.tty else done >> 27  # every 16 MB / 128 MB
            text = f"{self.name}: {done / 1e6:.1f} MB"
        if step == self.shown:
            return
        self.shown = step
        click.echo(f"\r{text}" if self.tty else text, err=True, nl=not self.tty or done == total)
