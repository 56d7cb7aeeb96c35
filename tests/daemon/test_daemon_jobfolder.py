"""Job folder rules: roles, job.yaml defaults and loose name matching, content identity."""

from __future__ import annotations

import os
import unicodedata

import pytest
from daemon_helpers import make_job
from lipsyncd.daemon.jobfolder import (
    JobFolderError,
    content_hash,
    file_hashes,
    file_sha256,
    is_junk,
    load_spec,
    on_disk,
    output_names,
)
from lipsyncd.engine.options import RenderOptions

DEFAULTS = RenderOptions()


def spec_of(folder):
    return load_spec(folder, defaults=DEFAULTS, naming="{stem}.mp4")


@pytest.mark.parametrize("path, junk", [
    (".DS_Store", True), ("._clip.mp4", True), ("THUMBS.DB", True), ("Desktop.ini", True), ("~$doc.docx", True),
    ("clip.mp4.part", True), ("x.TMP", True), ("a.crdownload", True), (".syncthing.clip.mp4.tmp", True),
    ("~syncthing~clip.mp4.tmp", True), ("@eaDir/clip.mp4/thumb.jpg", True), ("__MACOSX/._a.wav", True),
    ("clip.mp4", False), ("my ~$ file.mp4", False), ("partial.mp4", False),
])
def test_junk(path, junk):
    assert is_junk(path) is junk


def test_extra_ignore_patterns():
    assert is_junk("take.BAK", ["*.bak"]) and not is_junk("take.mp4", ["*.bak"])


def test_empty_job_yaml_means_defaults(tmp_path):
    folder = make_job(tmp_path, "j", {"s.flac": b"a", "b.webm": b"1", "a.JPG": b"2", "job.yaml": b"# nothing\n"})
    spec = spec_of(folder)
    assert (spec.audio, spec.videos, spec.options, spec.priority) == ("s.flac", ("a.JPG", "b.webm"), DEFAULTS, 0)
    assert output_names(spec, "j") == ["a.mp4", "b.mp4"]


def test_job_yaml_names_match_despite_case_and_accent_encoding(tmp_path):
    nfd = unicodedata.normalize("NFD", "Réunion.MP4")
    folder = make_job(tmp_path, "j", {"voix.wav": b"a", nfd: b"1", "job.yaml": "videos: réunion.mp4\n"})
    assert spec_of(folder).videos == (nfd,)


def test_nested_media_are_kept_but_not_used(tmp_path):
    folder = make_job(tmp_path, "j", {"s.wav": b"a", "v.mp4": b"1", "old/v2.mp4": b"2"})
    spec = spec_of(folder)
    assert spec.videos == ("v.mp4",) and "old/v2.mp4" in spec.others


def test_a_fixed_output_template_still_gives_distinct_names(tmp_path):
    folder = make_job(tmp_path, "j", {"s.wav": b"a", "x.mp4": b"1", "y.mp4": b"2", "job.yaml": "output: result\n"})
    assert output_names(spec_of(folder), "j") == ["result.mp4", "result (2).mp4"]


def test_no_video_is_a_clear_error(tmp_path):
    with pytest.raises(JobFolderError, match="No video or still image in the folder"):
        spec_of(make_job(tmp_path, "j", {"s.wav": b"a"}))


def test_content_hash_ignores_names_but_not_bytes_or_options(tmp_path):
    a = make_job(tmp_path, "a", {"s.wav": b"A", "v.mp4": b"V"})
    b = make_job(tmp_path, "b", {"speech.wav": b"A", "face.mp4": b"V"})
    c = make_job(tmp_path, "c", {"s.wav": b"A", "v.mp4": b"W"})
    d = make_job(tmp_path, "d", {"s.wav": b"A", "v.mp4": b"V", "job.yaml": "engine: {crf: 30}"})
    hashes = [content_hash(file_hashes(f, spec_of(f)), spec_of(f)) for f in (a, b, c, d)]
    assert hashes[0] == hashes[1] and len(set(hashes)) == 3


def test_media_are_taken_from_the_lone_sub_folder_at_any_depth(tmp_path):
    folder = make_job(tmp_path, "Job", {"Job/Job/s.wav": b"a", "Job/Job/v.mp4": b"1", "readme.txt": b"r",
                                        "__MACOSX/Job/._v.mp4": b"j", ".hidden/x.mp4": b"h"})
    spec = spec_of(folder)
    assert (spec.audio, spec.videos) == ("Job/Job/s.wav", ("Job/Job/v.mp4",))


def test_media_at_the_top_keep_sub_folders_unused(tmp_path):
    folder = make_job(tmp_path, "j", {"s.wav": b"a", "v.mp4": b"1", "Job/s.wav": b"a", "Job/w.mp4": b"2"})
    assert spec_of(folder).videos == ("v.mp4",)


def test_names_not_in_utf8_are_read_as_text_and_found_on_disk(tmp_path):
    raw = os.fsdecode(b"Caf\xe9.mp4")
    folder = make_job(tmp_path, "j", {"s.wav": b"a", raw: b"1", "job.yaml": "videos: [café.mp4]\n"})
    spec = spec_of(folder)
    assert spec.videos == ("Café.mp4",)
    assert on_disk(folder, "Café.mp4") == folder / raw
    assert file_hashes(folder, spec)["Café.mp4"] == file_sha256(folder / raw)


def test_a_linked_job_yaml_is_an_error(tmp_path):
    folder = make_job(tmp_path, "j", {"s.wav": b"a", "v.mp4": b"1", "elsewhere.yaml": b"priority: 3\n"})
    os.symlink(folder / "elsewhere.yaml", folder / "job.yaml")
    with pytest.raises(JobFolderError, match="job.yaml is a link; links are not followed"):
        spec_of(folder)


def test_a_lone_sub_folder_named_in_an_old_encoding(tmp_path):
    sub = os.fsdecode(b"Caf\xe9")
    folder = make_job(tmp_path, "j", {f"{sub}/s.wav": b"a", f"{sub}/v.mp4": b"1"})
    spec = spec_of(folder)
    assert (spec.audio, spec.videos) == ("Café/s.wav", ("Café/v.mp4",))
    assert on_disk(folder, "Café/v.mp4").read_bytes() == b"1"
