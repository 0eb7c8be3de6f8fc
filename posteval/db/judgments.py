"""The judge cache: an LLM judge is a model, and its answers are stored as model outputs (``predictions``)
keyed by the judge's identity hash, the rubric hash and the request's cache key, under a config hash of
their own, so no other read ever meets them (posteval.judges.engine.AnswerCache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.db.models import Prediction
from posteval.db.retry import retry_transient
from posteval.hashing import sha256_bytes

JUDGE_CONFIG = sha256_bytes(b"posteval judge answer v1")  # the config hash of every stored judge answer


class DatabaseAnswerCache:
    """Judge answers in the database; each answer is committed as soon as it comes."""

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url

    def get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored answers among ``keys``, as the engine's answer dicts."""

        def read() -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            with session_scope(self.database_url) as session:
                for start in range(0, len(keys), 500):
                    query = select(Prediction.example_key, Prediction.output, Prediction.extra).where(
                        (Prediction.config_hash == JUDGE_CONFIG)
                        & Prediction.example_key.in_(keys[start : start + 500])
                    )
                    for key, raw, extra in session.execute(query):
                        found[key] = {"raw": raw or "", **extra}
            return found

        return retry_transient(read, "reading cached judge answers")

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        """Store one answer; a concurrent writer's answer for the same key is kept."""
        extra = {k: v for k, v in answer.items() if k != "raw"}
        judge = sha256_bytes(str(answer["judge"]).encode())

        def write() -> None:
            with session_scope(self.database_url) as session:
                rows = [(key, str(answer["raw"]), extra)]
                repo.add_predictions(session, judge, str(answer["rubric_hash"]), JUDGE_CONFIG, rows)

        retry_transient(write, "storing a judge answer")
