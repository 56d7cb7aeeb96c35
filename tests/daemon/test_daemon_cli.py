"""The operator commands, through click's CliRunner (status, cancel, retry, doctor, bad config)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from daemon_helpers import write_config
from lipsyncd.daemon import doctor
from lipsyncd.daemon.cli import cli
from lipsyncd.daemon.store import Store


@pytest.fixture
def setup(tmp_path):
    path = write_config(tmp_path)
    store = Store(tmp_path / "state" / "lipsyncd.sqlite3")
    job = store.begin_intake("Interview 🎬", tmp_path / "inbox" / ".processing")
    store.enqueue(job.id, audio="a.wav", videos=[("a.mp4", "a.mp4", None), ("b.mp4", "b.mp4", None)], naming="{stem}.mp4",
                  priority=0, options={}, content_hash="h")
    store.claim(job.id)
    first = store.tasks(job.id)[0]
    store.task_started(first.id)
    store.task_progress(first.id, 5, 10)
    yield path, store
    store.close()


def invoke(path, *args):
    return CliRunner().invoke(cli, ["--config", str(path), *args], obj={}, env={"LIPSYNCD_CONFIG": None})


def test_status_prints_a_readable_table(setup):
    result = invoke(setup[0], "status")
    assert result.exit_code == 0, result.output
    service, header, row = result.output.splitlines()
    assert service == "service: not running"
    assert header.split() == ["ID", "JOB", "STATE", "VIDEOS", "%", "NOW", "FPS", "ETA", "WHEN", "(UTC)", "MESSAGE"]
    assert row.split() == ["1", "Interview", "🎬", "running", "0/2", "25", "a.mp4", "unknown"]


def test_status_shows_speed_eta_and_when_waiting_jobs_start(setup):
    path, store = setup
    first = store.tasks(1)[0]
    store.task_progress(first.id, 5, 10, "render", 2.5, 2.0)  # 2 s left; the second video as long
    waiting = store.begin_intake("next", path.parent / "inbox" / ".processing")
    store.enqueue(waiting.id, audio="a.wav", videos=[("c.mp4", "c.mp4", None)], naming="{stem}.mp4", priority=0,
                  options={}, content_hash="h2")
    running, queued = json.loads(invoke(path, "status", "--json").output)["jobs"]
    assert (running["stage"], running["fps"], running["queue_position"]) == ("render", 2.5, None)
    assert running["job_eta_s"] > running["video_eta_s"] > 0 and running["expected_finish"].endswith("+00:00")
    assert queued["queue_position"] == 1 and queued["expected_start"] == running["expected_finish"]
    table = invoke(path, "status").output
    assert "render 2.5" in table and "#1" in table


def test_pause_and_resume_are_persisted_and_shown(setup):
    path, store = setup
    assert "Queue paused" in invoke(path, "pause").output and store.paused
    assert invoke(path, "status").output.splitlines()[1].startswith("Queue PAUSED")
    assert "resumed" in invoke(path, "resume").output and not store.paused


def test_status_watch_redraws_until_interrupted(setup, monkeypatch):
    from lipsyncd.daemon import cli as cli_module

    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_module.time, "sleep", fake_sleep)
    result = invoke(setup[0], "status", "--watch", "--interval", "0.5")
    assert result.exit_code == 0 and sleeps == [0.5, 0.5]
    assert result.output.count("Interview 🎬") == 2 and "Ctrl-C to stop" in result.output


def test_status_json(setup):
    result = invoke(setup[0], "status", "--json")
    rows = json.loads(result.output)["jobs"]
    assert (rows[0]["name"], rows[0]["state"], rows[0]["percent"], rows[0]["current_video"]) == \
        ("Interview 🎬", "running", 25.0, "a.mp4")


def test_status_with_no_jobs_says_where_to_drop_them(tmp_path):
    path = write_config(tmp_path)
    Store(tmp_path / "state" / "lipsyncd.sqlite3").close()
    result = invoke(path, "status")
    assert result.exit_code == 0 and "Drop a job folder into" in result.output


def test_status_before_the_first_start_creates_nothing_and_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # built-in defaults: ./var, which must not appear
    result = CliRunner().invoke(cli, ["status"], obj={}, env={"LIPSYNCD_CONFIG": None})
    assert result.exit_code == 0, result.output
    database = tmp_path / "var" / "state" / "lipsyncd.sqlite3"
    assert result.output.splitlines() == [
        "service: not running",
        f"No database at {database}: the service has not run yet with this config (config: built-in defaults)"]
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(cli, ["status", "--json"], obj={}, env={"LIPSYNCD_CONFIG": None})
    assert json.loads(result.output) == {
        "service": {"running": False, "pid": None, "heartbeat_age_s": None, "healthy": False},
        "database": str(database), "paused": False, "slots": [], "jobs": []}
    assert list(tmp_path.iterdir()) == []


def test_doctor_opens_the_database_read_only_and_creates_no_state(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "_gpu", lambda c: [])
    monkeypatch.setattr(doctor, "_codecs", lambda c: [])
    result = invoke(write_config(tmp_path), "doctor")
    database = tmp_path / "state" / "lipsyncd.sqlite3"
    assert (f"[  ok] database: no database at {database}: the service has not run yet with this config; "
            "the service creates it at its first start") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_cancel_and_retry_without_a_database_say_so_and_create_none(tmp_path):
    path = write_config(tmp_path)
    for command in ("cancel", "retry"):
        result = invoke(path, command, "1")
        assert result.exit_code == 1
        assert result.output == (f"Error: no database at {tmp_path / 'state' / 'lipsyncd.sqlite3'}: "
                                 "the service has not run yet with this config\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_cancel_by_name_sets_the_flag_the_runner_reads(setup):
    path, store = setup
    result = invoke(path, "cancel", "Interview 🎬")
    assert result.exit_code == 0 and "cancelling" in result.output
    assert store.cancel_requested(1)


def test_unknown_job_is_a_clear_error(setup):
    result = invoke(setup[0], "retry", "nope")
    assert result.exit_code == 1
    assert "no job named 'nope'; `lipsyncd status` lists jobs" in result.output


def test_retry_of_a_running_job_is_refused(setup):
    result = invoke(setup[0], "retry", "1")
    assert result.exit_code == 1 and "is running; it does not need a retry" in result.output


def test_invalid_config_fails_at_start_with_the_key(tmp_path):
    path = write_config(tmp_path, watch={"mode": "smoke-signals"})
    result = invoke(path, "status")
    assert result.exit_code == 1
    assert "watch.mode: must be one of auto, inotify, polling; got 'smoke-signals'" in result.output


def test_doctor_reports_problems_with_fixes_and_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "_gpu", lambda c: [doctor.Check("GPU", doctor.WARN, "no GPU", "install CUDA")])
    result = invoke(write_config(tmp_path), "doctor")
    assert result.exit_code == 1
    assert "[  ok] ffmpeg (PyAV): PyAV" in result.output and "libx264 and aac encoders present" in result.output
    assert "[warn] GPU: no GPU" in result.output
    assert "[FAIL] model wav2lip: The lip-sync model file wav2lip_gan.pth is missing" in result.output
    assert "fix: lipsyncd models fetch wav2lip_gan" in result.output
    assert "[  ok] model musetalk: not installed: 7 of its 7 files missing" in result.output
    assert "[  ok] folder inbox:" in result.output


def test_doctor_passes_when_everything_is_there(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "_gpu", lambda c: [doctor.Check("GPU", doctor.OK, "fake GPU")])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wav2lip_gan.pth").write_bytes(b"weights")
    result = invoke(write_config(tmp_path), "doctor")
    assert result.exit_code == 0, result.output
    assert "All checks passed." in result.output
    assert "[  ok] model wav2lip: installed" in result.output


def test_doctor_says_musetalk_is_installed_and_requires_it_when_jobs_use_it(tmp_path, monkeypatch):
    from musetalk_weights import write_official_layout

    monkeypatch.setattr(doctor, "_gpu", lambda c: [doctor.Check("GPU", doctor.OK, "fake GPU")])
    result = invoke(write_config(tmp_path, engine={"models_dir": str(tmp_path / "models"), "cache_dir": None,
                                                  "defaults": {"model": "musetalk"}}), "doctor")
    assert result.exit_code == 1 and "[FAIL] model musetalk: not installed" in result.output
    assert "[warn] model wav2lip:" in result.output  # not the default: jobs may still ask for it
    write_official_layout(tmp_path / "models")
    result = invoke(write_config(tmp_path, engine={"models_dir": str(tmp_path / "models"), "cache_dir": None,
                                                  "defaults": {"model": "musetalk"}}), "doctor")
    assert "[  ok] model musetalk: installed (MuseTalk 1.5" in result.output


def test_doctor_flags_a_folder_it_cannot_use(tmp_path):
    (tmp_path / "outbox").write_text("a file where a folder should be")
    check = doctor._writable("outbox", tmp_path / "outbox")
    assert (check.level, check.detail) == (doctor.FAIL, f"{tmp_path / 'outbox'} is a file, not a folder")
    assert doctor._writable("state", tmp_path / "new" / "state").level == doctor.OK  # created at start
    share = doctor._writable("error", tmp_path / "share" / "error", on_share=True)  # ... but not on a share
    assert share.level == doctor.FAIL and "is the share mounted?" in share.detail
    assert share.fix.endswith(f"sudo install -d -o lipsyncd -g lipsync -m 2770 {tmp_path / 'share' / 'error'}")


def test_doctor_checks_the_cpu_runtime_and_what_int8_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "_gpu", lambda c: [doctor.Check("GPU", doctor.OK, "fake GPU")])
    result = invoke(write_config(tmp_path), "doctor")
    assert ("[  ok] precision: fp32 on a CPU (the reference's numbers) through OpenVINO; the opt-in int8 is "
            "installed") in result.output
    as_torch = write_config(tmp_path, engine={"models_dir": str(tmp_path / "models"), "cache_dir": None,
                                              "defaults": {"runtime": "torch"}})
    assert "(the reference's numbers) through torch; the opt-in" in invoke(as_torch, "doctor").output
    int8 = write_config(tmp_path, engine={"models_dir": str(tmp_path / "models"), "cache_dir": None,
                                          "defaults": {"precision": "int8"}})
    monkeypatch.setattr(doctor, "cpu_has_vnni", lambda: True)
    assert "[  ok] precision: int8 on a CPU with VNNI" in invoke(int8, "doctor").output
    monkeypatch.setattr(doctor, "cpu_has_vnni", lambda: False)
    assert "[warn] precision: int8 on a CPU without VNNI" in invoke(int8, "doctor").output
    real_find_spec = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: None if name == "nncf" else real_find_spec(name))
    result = invoke(int8, "doctor")
    assert result.exit_code == 1
    assert "[FAIL] precision: engine.defaults.precision is int8 but nncf not installed" in result.output
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: None if name == "openvino" else real_find_spec(name))
    assert "through torch (pip install 'lipsyncd[openvino]' runs it" in invoke(write_config(tmp_path), "doctor").output
    as_openvino = write_config(tmp_path, engine={"models_dir": str(tmp_path / "models"), "cache_dir": None,
                                                 "defaults": {"runtime": "openvino"}})
    result = invoke(as_openvino, "doctor")
    assert result.exit_code == 1
    assert "[FAIL] precision: engine.defaults.runtime is openvino but openvino is not installed" in result.output


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert doctor.cpu_has_vnni(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert not doctor.cpu_has_vnni(cpuinfo)
    assert not doctor.cpu_has_vnni(tmp_path / "missing")
