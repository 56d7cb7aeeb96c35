"""Job folder rules: roles, job.yaml defaults and loose name matching, content identity."""

from __future__ import annotations

import unicodedata

import pytest
from daemon_helpers import make_job
from lipsyncd.daemon.jobfolder import JobFolderError, content_hash, file_hashes, is_junk, load_spec, output_names
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
