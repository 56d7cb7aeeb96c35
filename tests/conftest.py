"""Fixtures shared across the suite: the test media and a checkpoint made by the weight rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
MEDIA = TESTS / "fixtures" / "media"
sys.path.insert(0, str(TESTS))  # tests/weights.py, importable from any test folder


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding ``wav2lip_gan.pth`` in the official checkpoint format, with
    weights from the conformance rule (no real weights can be downloaded here)."""
    from weights import write_checkpoint

    folder = tmp_path_factory.mktemp("models")
    write_checkpoint(folder / "wav2lip_gan.pth")
    return folder


@pytest.fixture(scope="session")
def face_clip() -> Path:
    return MEDIA / "face_256sq_2s.mp4"


@pytest.fixture(scope="session")
def speech_file() -> Path:
    return MEDIA / "speech_librispeech_14s.ogg"


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pictures the video decoder produces (one entry per picture), for the tests of decode passes."""
    from lipsyncd.engine import video_in

    pictures: list[int] = []
    decode_next = video_in._SlotReader._decode_next

    def counting(self: video_in._SlotReader):  # type: ignore[no-untyped-def]
        picture = decode_next(self)
        if picture is not None:
            pictures.append(1)
        return picture

    monkeypatch.setattr(video_in._SlotReader, "_decode_next", counting)
    return pictures
