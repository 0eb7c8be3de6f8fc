"""Every migration keeps every row: a database filled at each earlier revision, upgraded to head and taken
back down, holds the same rows throughout, on SQLite and PostgreSQL.

The revisions come from the script directory, so a new migration is covered without touching this file.
Rows are written through SQL valid at the revision (reflected tables), shaped like a demo run: two
checkpoints, a suite, two datasets, two runs with metrics, per-example scores, predictions, loss points,
health reports and a pinned baseline. Columns or tables this file does not know get generic values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, MetaData, create_engine, select, text, types

from posteval.db.migrate import alembic_config, downgrade, upgrade

SCRIPTS = ScriptDirectory.from_config(alembic_config("sqlite://"))
HEAD = SCRIPTS.get_current_head()
EARLIER = [r.revision for r in reversed(list(SCRIPTS.walk_revisions())) if r.revision != HEAD]

RUN_A, RUN_B = "a" * 32, "b" * 32
WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
KEYS = [f"ex-{i}" for i in range(5)]
METRICS = ["accuracy", "f1_macro"]
OUTPUT = "Ünïcode ✓ 'quoted' \\ back\nslash"


def demo_rows() -> dict[str, list[dict[str, Any]]]:
    """A demo run's worth of rows, by table, with the columns posteval has had so far."""
    metrics = [
        {
            "id": 1 + len(METRICS) * (2 * r + d) + m,
            "run_id": run,
            "dataset_id": d + 1,
            "name": name,
            "value": 0.5 + m / 10,
            "ci_low": 0.4,
            "ci_high": 0.6,
            "n": len(KEYS),
            "higher_is_better": True,
            "signature": f"sig|{name}",
            "details": {"confusion": [[1, 2], [3, 4]]},
        }
        for r, run in enumerate((RUN_A, RUN_B))
        for d in range(2)
        for m, name in enumerate(METRICS)
    ]
    return {
        "checkpoints": [
            {
                "id": 1,
                "fingerprint": "f" * 64,
                "path": "/models/base",
                "model_name": "contracts",
                "base_checkpoint_id": None,
                "training_step": None,
                "is_adapter": False,
            },
            {
                "id": 2,
                "fingerprint": "e" * 64,
                "path": "/models/ft",
                "model_name": "contracts",
                "base_checkpoint_id": 1,
                "training_step": 40,
                "is_adapter": True,
            },
        ],
        "suites": [
            {"id": 1, "name": "contracts", "fingerprint": "s" * 64, "source_text": "name: contracts\n"}
        ],
        "datasets": [
            {"id": 1, "name": "contract-type", "fingerprint": "d" * 64, "row_count": 5, "path": "a.jsonl"},
            {"id": 2, "name": "general", "fingerprint": "g" * 64, "row_count": 5, "path": "b.jsonl"},
        ],
        "eval_runs": [
            {
                "id": run,
                "checkpoint_id": i + 1,
                "suite_id": 1,
                "model_name": "contracts",
                # 0008: the path and step the run was evaluated at (its checkpoint's, as the backfill has it)
                "checkpoint_path": ("/models/base", "/models/ft")[i],
                "training_step": (None, 40)[i],
                "trigger": "manual",
                "status": "succeeded",
                "started_at": WHEN,
                "finished_at": WHEN,
                "error": None,
                "idempotency_key": str(i) * 64,
                "flow_run_id": None,
                "warnings": ["w"],
                "baseline_run_id": RUN_A if i else None,
                "gate_status": "passed" if i else "no_baseline",
                "gate_summary": "ok",
                "claim_id": None,
                "claimed_by": None,
                "heartbeat_at": None,
            }
            for i, run in enumerate((RUN_A, RUN_B))
        ],
        "metrics": metrics,
        "example_scores": [
            {
                "id": 1 + len(KEYS) * j + k,
                "run_id": m["run_id"],
                "dataset_id": m["dataset_id"],
                "metric": m["name"],
                "example_key": key,
                "value": float(k % 2),
            }
            for j, m in enumerate(metrics)
            for k, key in enumerate(KEYS)
        ],
        "predictions": [
            {
                "id": 1 + 10 * c + 5 * d + k,
                "checkpoint_fingerprint": fp,
                "dataset_fingerprint": dfp,
                "config_hash": "c" * 64,
                "example_key": key,
                "output": f"{OUTPUT} {k}",
                "extra": {"logprob": -1.5},
            }
            for c, fp in enumerate(("f" * 64, "e" * 64))
            for d, dfp in enumerate(("d" * 64, "g" * 64))
            for k, key in enumerate(KEYS)
        ],
        "loss_points": [
            {
                "id": 1 + 3 * s + step,
                "checkpoint_id": 2,
                "step": 10 * step,
                "split": split,
                "value": 2.0 - step,
            }
            for s, split in enumerate(("train", "eval"))
            for step in range(3)
        ],
        "health_reports": [
            {
                "id": 1 + i,
                "run_id": RUN_B,
                "kind": kind,
                "verdict": "healthy",
                "reason": "fine",
                "details": {"gap": 0.1},
            }
            for i, kind in enumerate(("overfitting", "forgetting"))
        ],
        "baselines": [
            {
                "id": 1,
                "model_name": "contracts",
                "suite_name": "contracts",
                "run_id": RUN_A,
                "checkpoint_id": None,
            }
        ],
        # A report stored as a metric before 0006 and moved here by it (its old value kept in from_metric).
        "run_details": [
            {
                "id": 1,
                "run_id": RUN_B,
                "dataset_id": 1,
                "name": "confusion_matrix",
                "n": len(KEYS),
                "signature": "sig|confusion_matrix",
                "details": {"labels": ["a", "b"], "matrix": [[2, 1], [0, 2]]},
                "from_metric": {
                    "value": 0.8,
                    "ci_low": 0.4,
                    "ci_high": 1.0,
                    "higher_is_better": True,
                    "scores": [[key, float(k != 2)] for k, key in enumerate(KEYS)],
                },
            }
        ],
    }


REPORTS = ("confusion_matrix", "per_class", "classification_report")


def _generic(column: Any, i: int) -> Any:
    """A value for a column this file does not know (added by a later migration)."""
    kind = column.type
    if isinstance(kind, Boolean):
        return bool(i % 2)
    if isinstance(kind, Integer):
        return i + 1
    if isinstance(kind, Float):
        return i + 0.25
    if isinstance(kind, DateTime):
        return WHEN
    if isinstance(kind, JSON):
        return {"i": i}
    length = getattr(kind, "length", None) or 64
    return f"{column.name}-{i}"[:length] if isinstance(kind, types.String) else None


def fill(url: str) -> None:
    """Insert the demo rows into every table the database has at its current revision."""
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    plan = demo_rows()
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            known = plan.get(table.name) or [{} for _ in range(3)]
            rows = []
            for i, values in enumerate(known):
                row = {c.name: values[c.name] if c.name in values else _generic(c, i) for c in table.columns}
                for fk in table.foreign_keys:  # an unknown table's reference points at a real row
                    if fk.parent.name not in values and fk.column.table.name in plan:
                        row[fk.parent.name] = plan[fk.column.table.name][0][fk.column.name]
                rows.append(row)
            conn.execute(table.insert(), rows)
            if conn.dialect.name == "postgresql" and "id" in table.c and isinstance(table.c.id.type, Integer):
                # Rows carry explicit ids, as a database written by posteval holds ids its sequence gave
                # out: move the sequence past them, so a migration inserting rows gets fresh ids.
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) "
                        f"FROM {table.name}"
                    )
                )
    engine.dispose()


def snapshot(url: str) -> dict[str, dict[str, list[Any]]]:
    """Every table's rows as {table: {column: sorted values... }} keyed by row, sorted for comparison."""
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    out: dict[str, dict[str, list[Any]]] = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            rows = [dict(r._mapping) for r in conn.execute(select(table))]
            out[table.name] = {repr(sorted(r.items(), key=str)): r for r in rows}  # type: ignore[dict-item]
    engine.dispose()
    return out


DETAIL_STASH = "__example_details_0009__"


def _rekeyed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {repr(sorted(r.items(), key=str)): r for r in rows}


def canonical_details(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` with per-example details in one shape: 0009 keeps them in ``example_scores.detail`` and its
    downgrade moves them into the metric row's ``details`` under DETAIL_STASH (and back on upgrade). Both
    shapes become rows of a pseudo-table ``example_details``."""
    if "example_scores" not in snap:
        return snap
    out = dict(snap)
    details: list[dict[str, Any]] = []
    scores = []
    for row in snap["example_scores"].values():
        row = dict(row)
        detail = row.pop("detail", None)
        if detail is not None:
            details.append(
                {**{k: row[k] for k in ("run_id", "dataset_id", "metric", "example_key")}, "d": detail}
            )
        scores.append(row)
    metrics = []
    for row in snap.get("metrics", {}).values():
        row = dict(row)
        if isinstance(row.get("details"), dict) and DETAIL_STASH in row["details"]:
            stash = row["details"][DETAIL_STASH]
            row["details"] = {k: v for k, v in row["details"].items() if k != DETAIL_STASH}
            where = {"run_id": row["run_id"], "dataset_id": row["dataset_id"], "metric": row["name"]}
            details += [{**where, "example_key": key, "d": detail} for key, detail in stash.items()]
        metrics.append(row)
    out["example_scores"], out["metrics"] = _rekeyed(scores), _rekeyed(metrics)
    out["example_details"] = _rekeyed(details)
    return out


def canonical(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` with reports in one shape whichever revision holds them: 0006 moves a report's metric row and
    its per-example scores into ``run_details`` (its value kept in ``from_metric``) and back on downgrade,
    under new surrogate ids. Both shapes become rows of a pseudo-table ``reports`` without ids. Per-example
    details likewise (:func:`canonical_details`)."""
    out = {table: dict(rows) for table, rows in canonical_details(snap).items()}
    reports: dict[str, Any] = {}

    def add(run_id: str, dataset_id: int, name: str, n: int, signature: str, details: Any, old: Any) -> None:
        row = {
            "run_id": run_id,
            "dataset_id": dataset_id,
            "name": name,
            "n": n,
            "signature": signature,
            "details": details,
            "value": old.get("value"),
            "ci_low": old.get("ci_low"),
            "ci_high": old.get("ci_high"),
            "higher_is_better": bool(old.get("higher_is_better", True)),
            "scores": sorted(tuple(pair) for pair in old.get("scores") or []),
        }
        reports[repr(sorted(row.items(), key=str))] = row

    for key, row in list(out.get("metrics", {}).items()):
        if row["name"] in REPORTS:
            del out["metrics"][key]
            mine = {
                k: r
                for k, r in out.get("example_scores", {}).items()
                if (r["run_id"], r["dataset_id"], r["metric"])
                == (row["run_id"], row["dataset_id"], row["name"])
            }
            for k in mine:
                del out["example_scores"][k]
            scores = [[r["example_key"], r["value"]] for r in mine.values()]
            add(
                row["run_id"],
                row["dataset_id"],
                row["name"],
                row["n"],
                row["signature"],
                row["details"],
                {**row, "scores": scores},
            )
    for row in out.pop("run_details", {}).values():
        add(
            row["run_id"],
            row["dataset_id"],
            row["name"],
            row["n"],
            row["signature"],
            row["details"],
            row["from_metric"] or {},
        )
    if reports or "run_details" in snap:
        out["reports"] = reports
    return out


def restrict(snap: dict[str, Any], to: dict[str, Any]) -> dict[str, Any]:
    """``snap`` limited to the tables and columns of ``to`` (what an older revision can hold)."""
    out: dict[str, Any] = {}
    for table, rows in to.items():
        columns = set(next(iter(rows.values()), {}))
        if not columns:
            out[table] = {}
            continue
        kept = [{k: v for k, v in r.items() if k in columns} for r in snap.get(table, {}).values()]
        out[table] = {repr(sorted(r.items(), key=str)): r for r in kept}
    return out


def test_every_revision_is_covered() -> None:
    assert EARLIER[0] == "0001" and HEAD not in EARLIER and len(EARLIER) >= 3


@pytest.mark.parametrize("revision", EARLIER)
def test_upgrade_to_head_and_back_keeps_every_row(empty_db_url: str, revision: str) -> None:
    upgrade(empty_db_url, revision)
    fill(empty_db_url)
    before = snapshot(empty_db_url)
    assert sum(len(rows) for rows in before.values()) >= 75  # 0001 alone holds 75 rows
    upgrade(empty_db_url)  # to head
    at_head = snapshot(empty_db_url)
    assert restrict(at_head, before) == before
    downgrade(empty_db_url, revision)
    assert snapshot(empty_db_url) == before
    upgrade(empty_db_url)
    assert restrict(snapshot(empty_db_url), before) == before


def test_one_step_down_and_back_from_head_keeps_every_row(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    fill(empty_db_url)
    at_head = canonical(snapshot(empty_db_url))
    previous = SCRIPTS.get_revision(HEAD).down_revision
    downgrade(empty_db_url, str(previous))
    one_down = canonical(snapshot(empty_db_url))
    assert one_down == restrict(at_head, one_down)
    upgrade(empty_db_url)
    assert canonical(snapshot(empty_db_url)) == at_head
