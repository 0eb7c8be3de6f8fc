"""One Settings object, read from the environment (prefix POSTEVAL_)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


class Settings(BaseSettings):
    """posteval's configuration: where it keeps its files, which database, which device."""

    model_config = SettingsConfigDict(env_prefix="POSTEVAL_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".posteval")
    database_url: str = ""
    device: str = "auto"
    dtype: str = "auto"
    max_length: int | None = Field(default=None, gt=0)  # cap on the HF model's context (rolling windows too)
    sqlite_busy_timeout_ms: int = 30_000
    # Reliability (docs/reliability.md): a running run's heartbeat is written every lease/4 seconds and a
    # run silent for longer than the lease is taken over; transient database errors (a restart, a
    # refused connection, SQLite busy) are retried with backoff for at most db_retry_s seconds.
    run_lease_s: float = Field(default=120.0, gt=0)
    db_retry_s: float = Field(default=60.0, ge=0)
    # The openai runner: the *name* of the variable holding the API key (the key itself is never read
    # into settings, so it cannot end up in a log or the database), and its request policy.
    openai_api_key_env: str | None = None
    openai_timeout_s: float = 60.0
    openai_max_retries: int = 3
    openai_bos_text: str | None = None
    # LLM judges: the *name* of the variable holding their API key, unless a suite's judge names one.
    judge_api_key_env: str | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto" and not re.fullmatch(r"(cpu|mps|cuda(:\d+)?)", value):
            raise ValueError(f"POSTEVAL_DEVICE={value!r}: expected auto, cpu, mps, cuda or cuda:N")
        return value

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, value: str) -> str:
        if value:
            check_database_url(value)
        return value

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"POSTEVAL_DTYPE={value!r}: expected one of {', '.join(DTYPES)}")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home.expanduser() / 'posteval.db'}"
        self.home = self.home.expanduser()
        return self

    @property
    def cache_dir(self) -> Path:
        """Where fingerprints of large files are remembered."""
        return self.home / "cache"


DATABASE_URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"


def check_database_url(url: str) -> None:
    """ValueError unless ``url`` is a SQLite or PostgreSQL URL whose driver is installed.

    The message shows the scheme only, never the URL (it may hold a password).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL (expected {DATABASE_URL_FORMS})") from None
    scheme = parsed.drivername
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {scheme!r} (expected {DATABASE_URL_FORMS})")
    try:
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError):
        raise ValueError(
            f"no installed driver for {scheme!r} (expected {DATABASE_URL_FORMS}; psycopg 3 for PostgreSQL)"
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; call ``get_settings.cache_clear()`` after changing the environment.

    A bad POSTEVAL_* value is an InputError naming the variable.
    """
    from posteval.errors import InputError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"POSTEVAL_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InputError(f"bad setting: {problems}") from exc
