"""Fixtures for the daemon's tests: a fresh config, database and fake engine per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import FakeEngine
from daemon_helpers import write_config
from lipsyncd.daemon import config as config_module
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.service import prepare_folders
from lipsyncd.daemon.store import Store


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    loaded = config_module.load(write_config(tmp_path), environ={})
    prepare_folders(loaded)
    return loaded


@pytest.fixture
def store(cfg: Config):
    db = Store(cfg.folders.database)
    yield db
    db.close()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()
