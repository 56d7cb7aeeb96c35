"""Config loading: defaults, the example file, environment overrides, precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lipsyncd.daemon.config import ConfigError, load

EXAMPLE = Path(__file__).parents[2] / "config.example.yaml"


def test_the_example_config_documents_every_key_and_loads_to_the_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    example = load(EXAMPLE, environ={})
    defaults = load(None, environ={})
    assert example.folders == defaults.folders
    assert example.folders.inbox == tmp_path / "var" / "inbox"
    assert example.engine.models_dir == tmp_path / "var" / "models"
    sections = ("watch", "jobs", "service", "engine", "web", "status", "notify", "retention")
    assert [getattr(example, s) for s in sections] == [getattr(defaults, s) for s in sections]
    raw = yaml.safe_load(EXAMPLE.read_text())
    from lipsyncd.daemon.config import DEFAULTS
    for section, keys in DEFAULTS.items():
        assert set(raw[section]) == set(keys), section
    assert set(raw["engine"]["defaults"]) == set(example.engine.defaults.as_dict())


def test_environment_overrides_one_key(tmp_path):
    cfg = load(None, environ={"LIPSYNCD_WATCH_MODE": "polling", "LIPSYNCD_WATCH_QUIET_PERIOD": "2.5",
                              "LIPSYNCD_FOLDERS_INBOX": str(tmp_path / "share in")})
    assert (cfg.watch.mode, cfg.watch.quiet_period, cfg.folders.inbox) == ("polling", 2.5, tmp_path / "share in")


def test_config_env_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("jobs: {duplicates: skip}\n")
    assert load(None, environ={"LIPSYNCD_CONFIG": str(path)}).jobs.duplicates == "skip"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("watch: {mode: fast}", "watch.mode: must be one of auto, inotify, polling; got 'fast'"),
    ("watch: {quiet_period: -1}", "watch.quiet_period: must be a number of seconds of 0 or more; got -1"),
    ("watch: {poll_interval: soon}", "watch.poll_interval: must be a number of seconds above 0; got 'soon'"),
    ("watch: {ignore: '*.bak'}", "watch.ignore: must be a list of file name patterns"),
    ("watch: {colour: red}", "watch.colour: unknown key; keys are mode, poll_interval"),
    ("pizza: {}", "pizza: unknown section; sections are folders, watch, jobs, service, engine"),
    ("jobs: {duplicates: maybe}", "jobs.duplicates: must be one of rerun, skip; got 'maybe'"),
    ("jobs: {keep_inputs: return}", "jobs.keep_inputs: must be one of keep, delete; got 'return'"),
    ("jobs: {naming: '{title}.mp4'}", "jobs.naming: unknown field {title}; allowed fields are {stem}, {job}"),
    ("engine: {device: tpu}", "engine.device: must be one of auto, cuda, cpu; got 'tpu'"),
    ("engine: {defaults: {crf: 99}}", "engine.defaults.crf: must be a whole number from 0 to 51; got 99"),
    ("folders: {outbox: var/inbox/out}", "folders.outbox: must not be inside folders.inbox"),
    ("folders: {error: var/outbox}", "folders.error: is the same folder as folders.outbox"),
    ("watch: [1, 2", "not valid YAML"),
    ("- a\n- b\n", "must hold sections such as 'folders:'"),
])
def test_invalid_config_names_the_file_key_and_allowed_values(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    assert message in str(err.value)
    assert str(err.value).startswith(str(path))


def test_unknown_environment_setting_is_an_error():
    with pytest.raises(ConfigError, match="LIPSYNCD_WATCH_SPEED: unknown setting"):
        load(None, environ={"LIPSYNCD_WATCH_SPEED": "1"})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.yaml", environ={})


def test_other_lipsyncd_variables_are_not_config_keys():
    """LIPSYNCD_MODELS_DIR (the models CLI's) or a test's own variable must not stop the service."""
    config = load(None, environ={"LIPSYNCD_MODELS_DIR": "/srv/models", "LIPSYNCD_MEDIAPIPE_WHEEL": "/x.whl"})
    assert config.watch.mode == "auto"


def test_the_dashboard_is_off_and_on_loopback_by_default(tmp_path):
    web = load(None, environ={}).web
    assert (web.enabled, web.host, web.needs_login) == (False, "127.0.0.1", False)


def test_a_dashboard_reachable_from_other_machines_needs_a_login(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("web: {enabled: true, host: 0.0.0.0}\n")
    with pytest.raises(ConfigError, match="web.host: 0.0.0.0 can be reached from other machines, so the "
                                          "dashboard needs a login"):
        load(path, environ={})
    web = load(path, environ={"LIPSYNCD_WEB_TOKEN": "0123456789abcdef0123"}).web
    assert web.needs_login and web.token == "0123456789abcdef0123"
    path.write_text("web: {enabled: true, host: '::1'}\n")
    assert not load(path, environ={}).web.needs_login


@pytest.mark.parametrize("web, message", [
    ("{username: ann}", "web.username and web.password: give both or neither"),
    ("{token: short}", "web.token: must be at least 16 characters"),
    ("{port: 70000}", "web.port: must be a port number from 1 to 65535; got 70000"),
    ("{enabled: yes please}", "web.enabled: must be true or false"),
])
def test_web_settings_are_checked(tmp_path, web, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"web: {web}\n")
    with pytest.raises(ConfigError, match=message):
        load(path, environ={})


@pytest.mark.parametrize("text, message", [
    ("retention: {outbox_days: -1}", "retention.outbox_days: must be a number of days above 0, or null"),
    ("notify: {webhook: 'ftp://x'}", "notify.webhook: must be an http:// or https:// URL"),
    ("notify: {apprise: 'not a url'}", "notify.apprise: must be a list of Apprise URLs"),
    ("status: {folder: var/inbox/status}", "status.folder: must not be inside folders.inbox"),
])
def test_notify_retention_and_status_settings_are_checked(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load(path, environ={})


def test_a_post_job_command_line_is_split_like_a_shell(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("notify: {command: \"/usr/local/bin/after-job --tag 'lip sync'\"}\n")
    assert load(path, environ={}).notify.command == ("/usr/local/bin/after-job", "--tag", "lip sync")
