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
