"""Shared fixtures: an isolated POSTEVAL_HOME, databases (SQLite and PostgreSQL), tiny checkpoints."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

POSTGRES_URL = os.environ.get(
    "POSTEVAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True, scope="session")
def posteval_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session gets its own POSTEVAL_HOME, so no test touches ~/.posteval."""
    from posteval.settings import get_settings

    home = tmp_path_factory.mktemp("posteval_home")
    previous = os.environ.get("POSTEVAL_HOME")
    os.environ["POSTEVAL_HOME"] = str(home)
    os.environ.pop("POSTEVAL_DATABASE_URL", None)
    get_settings.cache_clear()
    yield home
    if previous is None:
        os.environ.pop("POSTEVAL_HOME", None)
    else:
        os.environ["POSTEVAL_HOME"] = previous
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Settings are read anew after every test (after its monkeypatch is undone): a test that failed
    before clearing the cache must not leave its environment (a dead MLflow server) to the next ones."""
    from posteval.settings import get_settings

    yield
    get_settings.cache_clear()


def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the session; fails under CI=true, skips elsewhere, if unreachable."""
    from sqlalchemy.engine import make_url

    from posteval.db.scratch import scratch_database

    scratch = scratch_database(POSTGRES_URL, "posteval_test")
    try:
        url = scratch.__enter__()
    except Exception as exc:
        message = (
            f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} unreachable: {exc}"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield url
    finally:
        scratch.__exit__(None, None, None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database at head for the session."""
    from posteval.db.migrate import upgrade

    for url in _postgres_database():
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database at head for the session."""
    from posteval.db.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'posteval.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A database at head, on each backend (session-scoped databases, shared by the tests)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 base model with its own tokenizer, built locally (no hub)."""
    from posteval.toymodel import build_base_model

    return build_base_model(tmp_path_factory.mktemp("models") / "base")


@pytest.fixture(scope="session")
def finetuned_checkpoint(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base fine-tuned on the bundled contract clauses as the demo does (trainer_state.json included)."""
    from posteval.toymodel import finetune

    return finetune(base_checkpoint, tmp_path_factory.mktemp("models") / "contracts-ft")


@pytest.fixture(scope="session")
def overfit_checkpoint(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base fine-tuned far too long on 12 clauses: validation loss turns and rises."""
    from posteval.toymodel import finetune_overfit

    return finetune_overfit(base_checkpoint, tmp_path_factory.mktemp("models") / "contracts-overfit")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real Prefect server on 127.0.0.1 for the session's heavy tests (serve, workers, automations)."""
    from tests.servers import prefect_server as start

    with start(tmp_path_factory.mktemp("prefect-server")) as server:
        yield server
