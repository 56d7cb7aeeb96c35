"""Names written for Windows, macOS and Linux clients alike; collisions resolved, never overwritten."""

from __future__ import annotations

import os
import unicodedata

import pytest
from lipsyncd.daemon.names import readable, unique_in_dir, unique_name, windows_safe


@pytest.mark.parametrize("name, safe", [
    ("plain.mp4", "plain.mp4"),
    ("with spaces 🎬.mp4", "with spaces 🎬.mp4"),
    ('a<b>c:d"e/f\\g|h?i*j.mp4', "a_b_c_d_e_f_g_h_i_j.mp4"),
    ("CON", "_CON"), ("con.mp4", "_con.mp4"), ("LPT9.tar.gz", "_LPT9.tar.gz"), ("COM10.mp4", "COM10.mp4"),
    ("trailing. . ", "trailing"), ("  padded  ", "padded"), ("...", "untitled"), ("", "untitled"),
    ("tab\there", "tab_here"),
])
def test_windows_safe(name, safe):
    assert windows_safe(name) == safe


def test_windows_safe_normalises_to_nfc_and_bounds_length():
    assert windows_safe(unicodedata.normalize("NFD", "café.mp4")) == unicodedata.normalize("NFC", "café.mp4")
    long = windows_safe("é" * 300 + ".mp4")
    assert long.endswith(".mp4") and len(long.encode()) <= 200


def test_unique_name_is_case_and_normalisation_insensitive():
    nfd = unicodedata.normalize("NFD", "Café.mp4")
    assert unique_name("café.mp4", [nfd]) == "café (2).mp4"
    assert unique_name("Clip.mp4", ["clip.mp4", "CLIP (2).mp4"]) == "Clip (3).mp4"
    assert unique_name("folder", ["Folder"]) == "folder (2)"
    assert unique_name("new.mp4", ["old.mp4"]) == "new.mp4"


def test_unique_in_dir_sees_existing_entries(tmp_path):
    (tmp_path / "Job").mkdir()
    assert unique_in_dir(tmp_path, "job") == "job (2)"
    assert unique_in_dir(tmp_path / "missing", "job", reserved=["JOB"]) == "job (2)"


@pytest.mark.parametrize("raw, text", [
    (b"Caf\xe9.mp4", "Café.mp4"),          # Latin-1 / Windows-1252
    (b"\x93quoted\x94", "“quoted”"),       # Windows-1252 only
    (b"odd \x81 byte", "odd \ufffd byte"),  # no meaning in Windows-1252
    ("déjà vu".encode(), "déjà vu"),       # valid UTF-8 stays as it is
])
def test_readable_reads_bytes_that_are_not_utf8_as_windows_1252(raw, text):
    assert readable(os.fsdecode(raw)) == text


def test_written_names_are_always_valid_utf8():
    safe = windows_safe(os.fsdecode(b"Entr\xe9e\x81.mp4"))
    assert safe == "Entrée\ufffd.mp4" and safe.encode("utf-8")
