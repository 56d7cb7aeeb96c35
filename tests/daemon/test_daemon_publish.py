"""Atomic publishing, copy-verify across file systems, and readable errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from lipsyncd.daemon import publish
from lipsyncd.daemon.publish import Entry, PublishError, move_dir, publish_dir


def exdev(*_args):
    raise OSError(errno.EXDEV, "Invalid cross-device link")


def test_publish_builds_under_a_hidden_name_then_appears_whole(tmp_path):
    src = tmp_path / "a.mp4"
    src.write_bytes(b"video")
    seen = []
    real_link = os.link

    def spy(s, d):
        seen.append(sorted(p.name for p in (tmp_path / "out").iterdir()))
        real_link(s, d)

    os_link, os.link = os.link, spy
    (tmp_path / "out").mkdir()
    try:
        publish_dir([Entry("a.mp4", source=src), Entry("sub/report.txt", text="hello\n")], tmp_path / "out" / "Job")
    finally:
        os.link = os_link
    assert seen[0][0].startswith(".lipsyncd-") and "Job" not in seen[0]  # not visible while building
    assert (tmp_path / "out" / "Job" / "a.mp4").read_bytes() == b"video"
    assert (tmp_path / "out" / "Job" / "sub" / "report.txt").read_bytes() == b"hello\r\n"
    assert src.exists()  # publishing never removes the source
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["Job"]


def test_cross_filesystem_copy_is_verified(tmp_path, monkeypatch):
    src = tmp_path / "a.mp4"
    src.write_bytes(os.urandom(3 * publish.CHUNK + 5))
    monkeypatch.setattr(os, "link", exdev)
    publish_dir([Entry("a.mp4", source=src)], tmp_path / "Job")
    assert (tmp_path / "Job" / "a.mp4").read_bytes() == src.read_bytes()


def test_a_corrupted_copy_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "a.mp4"
    src.write_bytes(b"original bytes")

    def corrupting(fin, fout, digest):
        data = fin.read()
        digest.update(data)
        fout.write(data[:-1] + b"X")

    monkeypatch.setattr(os, "link", exdev)
    monkeypatch.setattr(publish, "_copy_data", corrupting)
    (tmp_path / "out").mkdir()
    with pytest.raises(PublishError, match="Could not write to"):
        publish_dir([Entry("a.mp4", source=src)], tmp_path / "out" / "Job")
    assert list((tmp_path / "out").iterdir()) == []
    assert src.read_bytes() == b"original bytes"


def test_never_replaces_an_existing_folder(tmp_path):
    (tmp_path / "Job").mkdir()
    with pytest.raises(PublishError):
        publish_dir([Entry("x.txt", text="x")], tmp_path / "Job")
    assert list(tmp_path.iterdir()) == [tmp_path / "Job"]


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "Not enough free space in"), (errno.EACCES, "No permission to write in"),
    (errno.EIO, "Could not write to"),
])
def test_errors_are_described_in_plain_words(tmp_path, code, words):
    assert publish.describe(OSError(code, os.strerror(code)), tmp_path).startswith(f"{words} {tmp_path}")


def test_move_dir_across_file_systems_copies_then_deletes(tmp_path, monkeypatch):
    src = tmp_path / "error" / "Job"
    (src / "sub").mkdir(parents=True)
    (src / "a.wav").write_bytes(b"audio")
    (src / "sub" / "b.txt").write_bytes(b"b")
    monkeypatch.setattr(os, "rename", lambda a, b, _real=os.rename: exdev() if Path(a) == src else _real(a, b))
    monkeypatch.setattr(os, "link", exdev)
    (tmp_path / "inbox").mkdir()
    move_dir(src, tmp_path / "inbox" / "Job")
    assert not src.exists()
    assert (tmp_path / "inbox" / "Job" / "sub" / "b.txt").read_bytes() == b"b"
