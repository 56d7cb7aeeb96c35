"""The service's configuration: one YAML file, overridable by environment, validated at start.

Every problem is a :class:`ConfigError` naming the file, the key and what is allowed, so
``systemctl status`` shows the one line a person needs. Relative folders are taken relative
to the current directory (``make run`` runs on ``./var``; the systemd unit uses absolute
paths). Environment variables ``LIPSYNCD_<SECTION>_<KEY>`` (for example
``LIPSYNCD_WATCH_MODE=polling``) override single keys; their values are read as YAML scalars.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lipsyncd.engine.options import DEVICES, RenderOptions

from . import mounts
from .jobfolder import JOB_FILES, MEDIA_SUFFIXES, JobFolderError, is_junk, validate_naming

ENV_PREFIX = "LIPSYNCD_"
CONFIG_ENV = "LIPSYNCD_CONFIG"
WATCH_MODES = ("auto", "inotify", "polling")
DUPLICATE_POLICIES = ("rerun", "skip")
KEEP_INPUTS = ("keep", "delete")
"""``jobs.keep_inputs``: file a finished job's inputs under ``outbox/<job>/input/`` (keep), or
delete them once every video rendered without a warning (delete: the outbox holds only what
was made). Inputs of a job that failed, was cancelled or only previewed are always kept."""
LOG_LEVELS = ("debug", "info", "warning", "error")
QUIET_LOCAL_S = 10.0
"""``watch.quiet_period: auto`` on a local disk: every writer on this machine (smbd included) is
seen holding its file open, so the quiet period only has to cover what no signal sees."""
QUIET_NETWORK_S = 120.0
"""``watch.quiet_period: auto`` on a network mount, whose writers on other machines no signal
sees: an SMB copy whose link went down for 30 s left its file unchanged for 55 s, and a client
gives up after a 60 s outage, so twice that (README, benchmarks/smb_quiet_period.py)."""
EXECUTORS = ("local", "ray")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the allowed values."""


@dataclass(frozen=True)
class Folders:
    inbox: Path
    outbox: Path
    error: Path
    state: Path
    """Local disk only: SQLite must never live on a network share."""

    @property
    def processing(self) -> Path:
        """Claimed jobs live here while they run: same file system as the inbox, so claiming is
        one atomic rename, and hidden (a dot folder) so users do not edit a running job."""
        return self.inbox / ".processing"

    @property
    def database(self) -> Path:
        return self.state / "lipsyncd.sqlite3"


@dataclass(frozen=True)
class Watch:
    mode: str
    poll_interval: float
    rescan_interval: float
    quiet_period: float
    max_wait: float
    ignore: tuple[str, ...]
    ready_marker: str | None = None
    """A file whose presence says "this folder is complete" (``READY``, or ``job.yaml`` for
    "job.yaml is written last"); None: decide from the copy itself (quiet period, writers, tails)."""


@dataclass(frozen=True)
class Jobs:
    duplicates: str
    naming: str
    keep_inputs: str = "keep"


@dataclass(frozen=True)
class Service:
    shutdown_timeout: float
    progress_interval: float
    model_retry_interval: float
    log_level: str


@dataclass(frozen=True)
class EngineSettings:
    models_dir: Path
    device: str
    cache_dir: Path | None
    defaults: RenderOptions
    gpus: str | int | tuple[int, ...]
    """``all``, a count, or the GPU indices to use (see :func:`.local_executor.plan_slots`)."""
    workers_per_gpu: int
    cpu_workers: int
    stuck_timeout: float
    """A video that makes no progress for this long has its worker killed and runs again."""
    max_attempts: int
    """How often a video is tried when its worker dies or gets stuck; then it fails."""


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str
    """``local`` (worker processes on this host) or ``ray`` (tasks on a Ray cluster)."""
    ray_address: str | None
    """A running cluster (``ray://head:10001`` or ``head:6379``); None starts a Ray inside the service."""
    path_map: dict[str, str]
    """Service path prefix -> the same folder as Ray workers mount it (the shared inbox)."""


@dataclass(frozen=True)
class Web:
    """The dashboard (``daemon/web``): off unless enabled; on loopback unless ``host`` says
    otherwise, and then only with credentials."""

    enabled: bool
    host: str
    port: int
    token: str | None
    username: str | None
    password: str | None
    upload: bool

    @property
    def needs_login(self) -> bool:
        return bool(self.token or self.username)


@dataclass(frozen=True)
class StatusFiles:
    folder: Path | None
    """Where lipsyncd-status.txt/.html are kept current (the share's root); None: not written."""


@dataclass(frozen=True)
class Notify:
    webhook: str | None
    command: tuple[str, ...]
    apprise: tuple[str, ...]
    retries: int
    backoff: float


@dataclass(frozen=True)
class Retention:
    """Days after which finished jobs' folders and history rows are removed; None: kept."""

    outbox_days: float | None
    error_days: float | None
    history_days: float | None


@dataclass(frozen=True)
class Config:
    folders: Folders
    watch: Watch
    jobs: Jobs
    service: Service
    engine: EngineSettings
    executor: ExecutorSettings
    source: str
    """Where the settings came from, for messages ("config.example.yaml", "built-in defaults")."""
    web: Web = Web(False, "127.0.0.1", 8765, None, None, None, True)
    status: StatusFiles = StatusFiles(None)
    notify: Notify = Notify(None, (), (), 5, 10.0)
    retention: Retention = Retention(None, None, None)


DEFAULTS: dict[str, dict[str, Any]] = {
    "folders": {"inbox": "var/inbox", "outbox": "var/outbox", "error": "var/error", "state": "var/state"},
    "watch": {"mode": "auto", "poll_interval": 2, "rescan_interval": 60, "quiet_period": "auto",
              "max_wait": 3600, "ignore": [], "ready_marker": None},
    "jobs": {"duplicates": "rerun", "naming": "{stem}.mp4", "keep_inputs": "keep"},
    "service": {"shutdown_timeout": 20, "progress_interval": 2, "model_retry_interval": 30,
                "log_level": "info"},
    "engine": {"models_dir": "var/models", "device": "auto", "cache_dir": "var/cache", "defaults": {},
               "gpus": "all", "workers_per_gpu": 1, "cpu_workers": 1, "stuck_timeout": 600, "max_attempts": 3},
    "executor": {"kind": "local", "ray_address": None, "path_map": {}},
    "web": {"enabled": False, "host": "127.0.0.1", "port": 8765, "token": None, "username": None,
            "password": None, "upload": True},
    "status": {"folder": None},
    "notify": {"webhook": None, "command": None, "apprise": [], "retries": 5, "backoff": 10},
    "retention": {"outbox_days": None, "error_days": None, "history_days": None},
}


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or ``$LIPSYNCD_CONFIG``, or built-in defaults), apply environment overrides,
    validate. Raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    raw: dict[str, Any] = {}
    source = str(path) if path else "built-in defaults"
    if path is not None:
        raw = _read(path)
    merged = {section: {**values, **(raw.get(section) or {})} for section, values in DEFAULTS.items()}
    for section in raw:
        if section not in DEFAULTS:
            raise ConfigError(f"{source}: {section}: unknown section; sections are {', '.join(DEFAULTS)}")
        if not isinstance(raw[section], (Mapping, type(None))):
            raise ConfigError(f"{source}: {section}: must hold 'key: value' settings")
    _apply_env(merged, environ)
    try:
        return _build(merged, source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must hold sections such as 'folders:' and 'watch:'")
    return raw


def _apply_env(merged: dict[str, dict[str, Any]], environ: Mapping[str, str]) -> None:
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("_")
        if section not in DEFAULTS:
            continue  # not a config key (LIPSYNCD_MODELS_DIR for the models CLI, a test's own variable)
        if key not in DEFAULTS[section] or key == "defaults":  # a known section: surely a typo
            raise ConfigError(f"environment: {name}: unknown setting; use LIPSYNCD_<SECTION>_<KEY> "
                              "for a key of config.example.yaml, for example LIPSYNCD_WATCH_MODE")
        try:
            merged[section][key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            merged[section][key] = text


def _build(m: dict[str, dict[str, Any]], source: str) -> Config:
    for section, values in m.items():
        unknown = sorted(set(values) - set(DEFAULTS[section]))
        if unknown:
            raise ConfigError(f"{section}.{unknown[0]}: unknown key; keys are {', '.join(DEFAULTS[section])}")
    f = m["folders"]
    folders = Folders(*(_path(f"folders.{k}", f[k]) for k in ("inbox", "outbox", "error", "state")))
    _check_folders(folders)
    w = m["watch"]
    ignore = w["ignore"] or []
    if not isinstance(ignore, list) or not all(isinstance(p, str) and p for p in ignore):
        raise ConfigError(f"watch.ignore: must be a list of file name patterns such as '*.bak'; got {ignore!r}")
    watch = Watch(_choice("watch.mode", w["mode"], WATCH_MODES), _seconds("watch.poll_interval", w["poll_interval"]),
                  _seconds("watch.rescan_interval", w["rescan_interval"]),
                  _quiet_period(w["quiet_period"], folders.inbox, w["mode"]),
                  _seconds("watch.max_wait", w["max_wait"]), tuple(ignore),
                  _ready_marker(w["ready_marker"], tuple(ignore)))
    j = m["jobs"]
    naming = j["naming"]
    try:  # the same template rules as job.yaml's output:
        validate_naming(naming, where="jobs.naming")
    except JobFolderError as exc:
        raise ConfigError(str(exc)) from None
    jobs = Jobs(_choice("jobs.duplicates", j["duplicates"], DUPLICATE_POLICIES), naming,
                _choice("jobs.keep_inputs", j["keep_inputs"], KEEP_INPUTS))
    s = m["service"]
    service = Service(_seconds("service.shutdown_timeout", s["shutdown_timeout"]),
                      _seconds("service.progress_interval", s["progress_interval"], allow_zero=True),
                      _seconds("service.model_retry_interval", s["model_retry_interval"]),
                      _choice("service.log_level", str(s["log_level"]).lower(), LOG_LEVELS))
    e = m["engine"]
    defaults = e["defaults"] or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError("engine.defaults: must hold render options as 'key: value' lines")
    try:
        options = RenderOptions.from_mapping(defaults, where="engine.defaults")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    engine = EngineSettings(_path("engine.models_dir", e["models_dir"]), _choice("engine.device", e["device"], DEVICES),
                            None if e["cache_dir"] in (None, "") else _path("engine.cache_dir", e["cache_dir"]),
                            options, _gpus(e["gpus"]), _count("engine.workers_per_gpu", e["workers_per_gpu"], 1, 16),
                            _count("engine.cpu_workers", e["cpu_workers"], 1, 256),
                            _seconds("engine.stuck_timeout", e["stuck_timeout"]),
                            _count("engine.max_attempts", e["max_attempts"], 1, 100))
    folder = m["status"]["folder"]
    status = StatusFiles(None if folder in (None, "") else _path("status.folder", folder))
    if status.folder is not None and status.folder.is_relative_to(folders.inbox):
        raise ConfigError("status.folder: must not be inside folders.inbox (use the share's root beside it)")
    return Config(folders, watch, jobs, service, engine, _executor(m["executor"]), source, _web(m["web"]), status,
                  _notify(m["notify"]), Retention(*(_days(f"retention.{k}", m["retention"][k])
                                                    for k in ("outbox_days", "error_days", "history_days"))))


def _days(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}: must be a number of days above 0, or null to keep everything; got {value!r}")
    return float(value)


def _notify(n: dict[str, Any]) -> Notify:
    webhook = n["webhook"]
    if webhook is not None and not (isinstance(webhook, str) and webhook.startswith(("http://", "https://"))):
        raise ConfigError(f"notify.webhook: must be an http:// or https:// URL; got {webhook!r}")
    command = n["command"]
    if isinstance(command, str):
        command = shlex.split(command)
    if command is not None and not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
        raise ConfigError(f"notify.command: must be a command line or a list of arguments; got {command!r}")
    apprise = n["apprise"] or []
    if isinstance(apprise, str):
        apprise = [apprise]
    if not isinstance(apprise, list) or not all(isinstance(u, str) and "://" in u for u in apprise):
        raise ConfigError(f"notify.apprise: must be a list of Apprise URLs such as 'ntfy://topic'; got {apprise!r}")
    retries = n["retries"]
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 20:
        raise ConfigError(f"notify.retries: must be a whole number from 0 to 20; got {retries!r}")
    return Notify(webhook, tuple(command or ()), tuple(apprise), retries, _seconds("notify.backoff", n["backoff"]))


def _web(w: dict[str, Any]) -> Web:
    for key in ("enabled", "upload"):
        if not isinstance(w[key], bool):
            raise ConfigError(f"web.{key}: must be true or false; got {w[key]!r}")
    port = w["port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"web.port: must be a port number from 1 to 65535; got {port!r}")
    host = w["host"]
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"web.host: must be an address such as 127.0.0.1 or 0.0.0.0; got {host!r}")
    secrets = {}
    for key in ("token", "username", "password"):
        value = w[key]
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise ConfigError(f"web.{key}: must be text (or left out); got {value!r}")
        secrets[key] = str(value) if value is not None else None
    if bool(secrets["username"]) != bool(secrets["password"]):
        raise ConfigError("web.username and web.password: give both or neither")
    if secrets["token"] is not None and len(secrets["token"]) < 16:
        raise ConfigError("web.token: must be at least 16 characters (for example the output of "
                          "`openssl rand -hex 16`)")
    web = Web(w["enabled"], host.strip(), port, secrets["token"], secrets["username"], secrets["password"],
              w["upload"])
    if web.enabled and not is_loopback(web.host) and not web.needs_login:
        raise ConfigError(f"web.host: {web.host} can be reached from other machines, so the dashboard needs "
                          "a login: set web.token, or web.username and web.password")
    return web


def is_loopback(host: str) -> bool:
    """Only this machine can connect to ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _gpus(value: Any) -> str | int | tuple[int, ...]:
    if value == "all":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _count("engine.gpus", value, 0, 64)
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in value) and len(set(value)) == len(value):
        return tuple(value)
    raise ConfigError(f"engine.gpus: must be all, a number of GPUs, or a list of GPU numbers such as [0, 2]; "
                      f"got {value!r}")


def _executor(x: dict[str, Any]) -> ExecutorSettings:
    address = x["ray_address"]
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError(f"executor.ray_address: must be a Ray address such as ray://head:10001, or null to "
                          f"start Ray inside the service; got {address!r}")
    path_map = x["path_map"] or {}
    if not isinstance(path_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k.startswith("/") and v.startswith("/")
            for k, v in path_map.items()):
        raise ConfigError("executor.path_map: must map folders as the service sees them to the same folders as "
                          f"the Ray workers mount them, such as {{/srv/lipsync: /mnt/lipsync}}; got {path_map!r}")
    kind = _choice("executor.kind", x["kind"], EXECUTORS)
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("executor.kind: ray needs Ray, which is not installed; install it with "
                          "pip install -e '.[ray]' (the same Ray version on every node), or use local")
    return ExecutorSettings(kind, address, dict(path_map))


def _count(name: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name}: must be a whole number from {low} to {high}; got {value!r}")
    return value


def _path(name: str, value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: must be a folder path; got {value!r}")
    return Path(value).expanduser().absolute()


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _seconds(name: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value > 0 or allow_zero and value == 0)
    if not ok:
        raise ConfigError(f"{name}: must be a number of seconds {'of 0 or more' if allow_zero else 'above 0'}; "
                          f"got {value!r}")
    return float(value)


def _quiet_period(value: Any, inbox: Path, mode: str) -> float:
    """Seconds, or ``auto``: :data:`QUIET_NETWORK_S` when the inbox is on a network mount or is
    polled (what the README prescribes for one written by other machines), :data:`QUIET_LOCAL_S`
    otherwise."""
    if value != "auto":
        if isinstance(value, str):
            raise ConfigError(f"watch.quiet_period: must be a number of seconds or auto; got {value!r}")
        return _seconds("watch.quiet_period", value, allow_zero=True)
    existing = next((p for p in (inbox, *inbox.parents) if p.exists()), inbox)
    on_network = mounts.filesystem_type(existing) in mounts.NETWORK_FS
    return QUIET_NETWORK_S if mode == "polling" or on_network else QUIET_LOCAL_S


def _ready_marker(value: Any, ignore: tuple[str, ...]) -> str | None:
    """A plain file name that is neither media (it would be taken for an input) nor ignored junk;
    job.yaml is allowed: "job.yaml written last" is a common hand-off."""
    if value in (None, ""):
        return None
    problem = None
    if not isinstance(value, str) or value.strip() != value or value in (".", "..") or any(c in value for c in "/\\"):
        problem = "must be a plain file name such as READY, or null"
    elif value.lower() not in JOB_FILES and Path(value).suffix.lower() in MEDIA_SUFFIXES:
        problem = "must not be a media file name (it would be taken as an input)"
    elif is_junk(value, ignore):
        problem = "must not match an ignored file name pattern"
    if problem:
        raise ConfigError(f"watch.ready_marker: {problem}; got {value!r}")
    return value


def _check_folders(folders: Folders) -> None:
    """The four folders must be distinct, and none may sit inside the inbox (it would be read as a job)."""
    named = {"inbox": folders.inbox, "outbox": folders.outbox, "error": folders.error, "state": folders.state}
    seen: dict[Path, str] = {}
    for key, path in named.items():
        if path in seen:
            raise ConfigError(f"folders.{key}: is the same folder as folders.{seen[path]} ({path})")
        seen[path] = key
        if key != "inbox" and path.is_relative_to(folders.inbox):
            raise ConfigError(f"folders.{key}: must not be inside folders.inbox ({path}); "
                              "every folder in the inbox is taken for a job")
