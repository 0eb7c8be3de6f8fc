"""Settings come from POSTEVAL_* variables, with a SQLite file in POSTEVAL_HOME by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from posteval.settings import Settings


def test_default_database_is_sqlite_in_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POSTEVAL_HOME", str(tmp_path))
    monkeypatch.delenv("POSTEVAL_DATABASE_URL", raising=False)
    assert Settings().database_url == f"sqlite:///{tmp_path / 'posteval.db'}"


def test_database_url_and_device_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("POSTEVAL_DEVICE", "cpu")
    settings = Settings()
    assert (settings.database_url, settings.device) == ("postgresql+psycopg://u@h/db", "cpu")
