"""Settings come from POSTEVAL_* variables, with a SQLite file in POSTEVAL_HOME by default."""

from __future__ import annotations

import subprocess
import sys
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


def test_an_unknown_database_scheme_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = {
        "POSTEVAL_HOME": str(tmp_path),
        "POSTEVAL_DATABASE_URL": "postgres://user:secret@nowhere/db",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "runs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # Issue 13: a scheme SQLAlchemy cannot load is bad input naming the variable (it was a raw exit 3).
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: bad setting: POSTEVAL_DATABASE_URL: unsupported database 'postgres' "
        "(expected sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)"
    ]
    assert "secret" not in result.stderr


def test_a_bad_setting_is_refused_naming_the_variable(tmp_path: Path) -> None:
    env = {"POSTEVAL_HOME": str(tmp_path), "POSTEVAL_DEVICE": "gpu", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "runs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "POSTEVAL_DEVICE='gpu': expected auto, cpu, mps, cuda or cuda:N" in result.stderr
