"""The share guard: which mount each folder belongs on, what counts as gone, what may be created.

Mounts are simulated with a mount table file (the format of /proc/self/mountinfo) so these run
anywhere; tests/daemon/test_daemon_share_outage.py unmounts a real share under a running service.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from daemon_fakes import FakeEngine
from daemon_helpers import make_job
from lipsyncd.daemon import doctor, filing, service
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.publish import PublishError
from lipsyncd.daemon.intake import Intake, recover
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.share import ShareError, ShareGuard, is_waiting_note, mount_of, mounts
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher


def mount_line(point: Path | str, fstype: str = "ext4", source: str = "/dev/sda1", n: int = 1) -> str:
    escaped = str(point).replace(" ", "\\040")
    return f"{20 + n} 1 8:{n} / {escaped} rw,relatime shared:{n} - {fstype} {source} rw\n"


class Table:
    """A mount table file the guard reads instead of /proc/self/mountinfo."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.points: list[Path] = []

    def set(self, *points: Path) -> None:
        self.points = [Path("/"), *points]
        self.path.write_text("".join(mount_line(p, n=i) for i, p in enumerate(self.points)))


@pytest.fixture
def table(tmp_path: Path) -> Table:
    t = Table(tmp_path / "mountinfo")
    t.set()
    return t


def guard_for(root: Path, table: Table, fstab: Path | None = None) -> ShareGuard:
    folders = {name: root / "share" / name for name in ("inbox", "outbox", "error")}
    return ShareGuard(folders, root / "state.json", mountinfo=table.path, fstab=fstab or root / "no-fstab")


def test_the_mount_table_is_read_with_escaped_names_and_the_deepest_mount_wins(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(mount_line("/") + mount_line("/srv/my share", "cifs", "//nas/share", 2) + "garbage line\n")
    table = mounts(info)
    assert [m.point for m in table] == [Path("/"), Path("/srv/my share")]
    assert mount_of(Path("/srv/my share/inbox/x"), table).source == "//nas/share"
    assert mount_of(Path("/srv/other"), table).point == Path("/")


def test_first_start_creates_the_folders_and_remembers_their_mount(tmp_path, table):
    (tmp_path / "share").mkdir()
    table.set(tmp_path / "share")
    guard = guard_for(tmp_path, table)
    assert guard.prepare() is None
    assert all(path.is_dir() for path in guard.folders.values())
    again = guard_for(tmp_path, table)  # the next start knows where they belong
    table.set()  # ... and the share is not mounted this time: the path falls through to the disk
    assert "is not mounted" in again.prepare()


def test_a_share_missing_at_a_later_start_is_waited_for_and_nothing_is_created(tmp_path, table):
    (tmp_path / "share").mkdir()
    table.set(tmp_path / "share")
    assert guard_for(tmp_path, table).prepare() is None
    (tmp_path / "share").rename(tmp_path / "mounted")  # what the mount held
    (tmp_path / "share").mkdir()  # the bare mountpoint left on the disk
    table.set()
    guard = guard_for(tmp_path, table)
    reason = guard.prepare()
    assert reason == f"the share {tmp_path / 'share'} is not mounted ({tmp_path / 'share' / 'inbox'} is not there)"
    assert guard.check() == reason
    assert list((tmp_path / "share").iterdir()) == []
    (tmp_path / "share").rmdir()
    (tmp_path / "mounted").rename(tmp_path / "share")
    table.set(tmp_path / "share")
    assert guard.check() is None


def test_a_folder_removed_under_a_mounted_share_is_created_again(tmp_path, table):
    (tmp_path / "share").mkdir()
    table.set(tmp_path / "share")
    guard = guard_for(tmp_path, table)
    assert guard.prepare() is None
    guard.folders["outbox"].rmdir()
    assert guard.check() is None and guard.folders["outbox"].is_dir()


def test_a_missing_parent_is_waited_for_not_created(tmp_path, table):
    guard = guard_for(tmp_path, table)
    assert guard.prepare() == (f"the folder {tmp_path / 'share'} does not exist: create it, or mount the share "
                               "that holds it")
    assert not (tmp_path / "share").exists() and not (tmp_path / "state.json").exists()


def test_an_unmounted_fstab_mount_point_is_never_written_into(tmp_path, table):
    (tmp_path / "share").mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# comment\n//nas/lipsync {tmp_path / 'share'} cifs credentials=/x 0 0\n"
                     "/dev/sda2 none swap sw 0 0\n")
    guard = guard_for(tmp_path, table, fstab)
    assert guard.prepare() == (f"the share {tmp_path / 'share'} is not mounted (it is in /etc/fstab); the inbox "
                               f"folder {tmp_path / 'share' / 'inbox'} is on it")
    assert list((tmp_path / "share").iterdir()) == []
    table.set(tmp_path / "share")
    assert guard.prepare() is None and (tmp_path / "share" / "error").is_dir()


def test_a_share_mounted_later_below_the_recorded_mount_is_followed(tmp_path, table):
    (tmp_path / "share").mkdir()
    guard = guard_for(tmp_path, table)
    assert guard.prepare() is None  # local folders first: recorded on "/"
    table.set(tmp_path / "share")  # then the admin mounts a NAS there (our table only; same device)
    next_start = guard_for(tmp_path, table)
    assert next_start.prepare() is None
    assert str(tmp_path / "share") in (tmp_path / "state.json").read_text()


@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_a_folder_path_that_is_a_file_or_a_dangling_link_is_one_clear_error(tmp_path, table, kind):
    (tmp_path / "share").mkdir()
    inbox = tmp_path / "share" / "inbox"
    if kind == "file":
        inbox.write_text("oops")
        expected = f"folders.inbox: {inbox} is a file, not a folder; move it away or change folders.inbox"
    else:
        inbox.symlink_to(tmp_path / "gone")
        expected = (f"folders.inbox: {inbox} is a link to {tmp_path / 'gone'}, which does not exist; fix the "
                    "link or point the config at the real folder")
    with pytest.raises(ShareError) as caught:
        guard_for(tmp_path, table).prepare()
    assert str(caught.value) == expected and "\n" not in expected


def test_answers_are_reused_only_within_max_age(tmp_path, table):
    now = [0.0]
    (tmp_path / "share").mkdir()
    guard = ShareGuard({"inbox": tmp_path / "share" / "inbox"}, tmp_path / "s.json", clock=lambda: now[0],
                       mountinfo=table.path, fstab=tmp_path / "none")
    assert guard.prepare() is None
    (tmp_path / "share").rename(tmp_path / "away")
    now[0] = 0.5
    assert guard.check(max_age=1.0) is None  # the cached answer
    assert "is not there" in guard.check()
    assert guard.last_reason == guard.check(max_age=10)


# -- the service's parts with a guard: a share renamed away mid-job -----------------------------


@pytest.fixture
def shared(cfg: Config, tmp_path: Path) -> tuple[Config, ShareGuard]:
    """cfg with inbox/outbox/error inside tmp/share, and a prepared guard for them."""
    share = tmp_path / "share"
    folders = dataclasses.replace(cfg.folders, inbox=share / "inbox", outbox=share / "outbox", error=share / "error")
    moved = dataclasses.replace(cfg, folders=folders, watch=dataclasses.replace(cfg.watch, quiet_period=0))
    share.mkdir()
    guard = ShareGuard.for_config(moved)
    assert guard.prepare() is None
    moved.folders.processing.mkdir()
    return moved, guard


def test_a_share_gone_mid_render_requeues_the_job_with_a_note_and_it_finishes_when_back(shared, tmp_path):
    cfg, guard = shared
    share, away = tmp_path / "share", tmp_path / "away"
    make_job(cfg.folders.inbox, "talk", {"speech.wav": b"RIFF", "a.mp4": b"v1", "b.mp4": b"v2"})
    make_job(cfg.folders.inbox, "next")

    outages = []

    def on_frame(frame: int) -> None:
        if frame == 5 and not outages:  # once, in the middle of the first video
            outages.append(frame)
            share.rename(away)

    engine = FakeEngine(on_frame=on_frame)
    store = Store(cfg.folders.database)
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1), share=guard)
    assert len(intake.tick(store) + intake.tick(store)) == 2
    runner = Runner(cfg, lambda: engine, threading.Event(), share=guard)
    while runner.step(store):
        pass
    jobs = [store.job(1), store.job(2)]  # job 1 was rendering when the share went
    assert [j.state for j in jobs] == ["queued", "queued"]
    assert all(is_waiting_note(j.note) and "is not there" in j.note for j in jobs)
    assert {t.state for t in store.tasks(1)} == {"queued"}
    assert not share.exists() and intake.tick(store) == []  # nothing created, nothing claimed
    away.rename(share)
    while runner.step(store):
        pass
    assert [store.job(1).state, store.job(2).state] == ["done", "done"]
    assert [(store.job(i).note, store.job(i).attempt) for i in (1, 2)] == [(None, 2), (None, 1)]
    assert sorted(p.name for p in cfg.folders.outbox.iterdir()) == ["next", "talk"]
    assert list(cfg.folders.error.iterdir()) == []
    store.close()


def test_filing_waits_while_the_share_is_gone_instead_of_failing(shared, tmp_path, monkeypatch):
    cfg, guard = shared
    make_job(cfg.folders.inbox, "talk")
    store = Store(cfg.folders.database)
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1), share=guard)
    intake.tick(store) + intake.tick(store)
    publish = filing.publish_dir

    def share_goes_while_publishing(entries, final):
        (tmp_path / "share").rename(tmp_path / "away")
        publish(entries, final)

    monkeypatch.setattr(filing, "publish_dir", share_goes_while_publishing)
    runner = Runner(cfg, FakeEngine, threading.Event(), share=guard)
    while runner.step(store):
        pass
    job = store.job(1)
    assert (job.state, job.error) == ("filing", None) and is_waiting_note(job.note)
    monkeypatch.undo()
    assert not runner.step(store)  # still away: nothing happens
    (tmp_path / "away").rename(tmp_path / "share")
    while runner.step(store):
        pass
    assert (store.job(1).state, store.job(1).note) == ("done", None)
    assert (cfg.folders.outbox / "talk" / "face.mp4").is_file()
    assert list(cfg.folders.processing.iterdir()) == []
    store.close()


def test_a_finished_job_whose_inputs_were_left_held_is_filed_at_start(cfg, store, engine, monkeypatch):
    cfg = dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, quiet_period=0))

    def no_space(*_args, **_kwargs):
        raise PublishError(28, "Not enough free space")

    make_job(cfg.folders.inbox, "held")
    monkeypatch.setattr(filing, "publish_dir", no_space)
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    intake.tick(store) + intake.tick(store)
    Runner(cfg, lambda: engine, threading.Event()).step(store)
    assert store.job(1).state == "failed" and (cfg.folders.processing / "job-1" / "input").is_dir()
    monkeypatch.undo()
    recover(store, cfg)
    assert store.job(1).state == "done"
    assert (cfg.folders.outbox / "held" / "face.mp4").is_file()
    assert list(cfg.folders.processing.iterdir()) == []


def test_the_service_refuses_an_inbox_that_is_a_file_in_one_line(cfg, tmp_path, caplog):
    inbox = tmp_path / "share" / "inbox"
    inbox.parent.mkdir()
    inbox.write_text("not a folder")
    broken = dataclasses.replace(cfg, folders=dataclasses.replace(cfg.folders, inbox=inbox))
    with pytest.raises(service.StartError) as caught:  # the CLI prints it as one line and exits 1
        service.run(broken, engine_factory=FakeEngine)
    assert str(caught.value) == f"folders.inbox: {inbox} is a file, not a folder; move it away or change folders.inbox"
    assert inbox.read_text() == "not a folder"


def test_a_folder_the_service_may_not_create_is_one_clear_error(tmp_path, table, monkeypatch):
    (tmp_path / "share").mkdir()

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(ShareError, match=r"^folders\.inbox: cannot create .*/share/inbox \(Permission denied\); "):
        guard_for(tmp_path, table).prepare()


def test_doctor_says_when_the_share_is_away_and_touches_nothing(shared, tmp_path):
    cfg, _guard = shared
    assert doctor._share(cfg)[0].level == doctor.OK
    (tmp_path / "share").rename(tmp_path / "away")
    (tmp_path / "share").mkdir()  # an empty folder where the share was
    record = (cfg.folders.state / "share.json").read_text()
    (check,) = doctor._share(cfg)
    assert (check.level, check.detail) == (doctor.FAIL, f"the inbox folder {cfg.folders.inbox} is not there "
                                                        "(moved or renamed?)")
    assert list((tmp_path / "share").iterdir()) == [] and (cfg.folders.state / "share.json").read_text() == record
