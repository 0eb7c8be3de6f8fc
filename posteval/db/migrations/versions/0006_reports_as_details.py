"""reports as details: confusion_matrix, per_class and classification_report rows move to run_details

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

Reports were stored as metrics (the confusion matrix carried accuracy as its value, the per-class table and
the classification report macro-F1), so they were listed, compared and gated twice. Upgrade moves each such
metric row, with its per-example scores, into ``run_details``; the row's value, CI and scores are kept in
``from_metric`` so a downgrade puts back exactly what was there. Only a new table and row moves: no table
is rebuilt.
"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

REPORTS = ("confusion_matrix", "per_class", "classification_report")

_metrics = sa.table(
    "metrics",
    sa.column("id", sa.Integer),
    sa.column("run_id", sa.String),
    sa.column("dataset_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("value", sa.Float),
    sa.column("ci_low", sa.Float),
    sa.column("ci_high", sa.Float),
    sa.column("n", sa.Integer),
    sa.column("higher_is_better", sa.Boolean),
    sa.column("signature", sa.Text),
    sa.column("details", sa.JSON),
)
_scores = sa.table(
    "example_scores",
    sa.column("run_id", sa.String),
    sa.column("dataset_id", sa.Integer),
    sa.column("metric", sa.String),
    sa.column("example_key", sa.String),
    sa.column("value", sa.Float),
)
_details = sa.table(
    "run_details",
    sa.column("id", sa.Integer),
    sa.column("run_id", sa.String),
    sa.column("dataset_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("n", sa.Integer),
    sa.column("signature", sa.Text),
    sa.column("details", sa.JSON),
    sa.column("from_metric", sa.JSON),
)


def _is_report(name: str) -> bool:
    """A report's stored name: its registered name, or that name with option suffixes."""
    return any(name == report or name.startswith(f"{report}_") for report in REPORTS)


def _score_filter(run_id: str, dataset_id: int, metric: str) -> Any:
    return sa.and_(
        _scores.c.run_id == run_id, _scores.c.dataset_id == dataset_id, _scores.c.metric == metric
    )


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('run_details',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('from_metric', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_run_details_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['run_id'], ['eval_runs.id'], name=op.f('fk_run_details_run_id_eval_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_details'))
    )
    with op.batch_alter_table('run_details', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_details_run_id'), ['run_id'], unique=False)

    bind = op.get_bind()
    rows = bind.execute(sa.select(_metrics).order_by(_metrics.c.id)).mappings().all()
    for row in rows:
        if not _is_report(row["name"]):
            continue
        where = _score_filter(row["run_id"], row["dataset_id"], row["name"])
        scores = bind.execute(
            sa.select(_scores.c.example_key, _scores.c.value).where(where)
        ).all()
        bind.execute(
            _details.insert().values(
                run_id=row["run_id"],
                dataset_id=row["dataset_id"],
                name=row["name"],
                n=row["n"],
                signature=row["signature"],
                details=row["details"] or {},
                from_metric={
                    "value": row["value"],
                    "ci_low": row["ci_low"],
                    "ci_high": row["ci_high"],
                    "higher_is_better": bool(row["higher_is_better"]),
                    "scores": [[key, value] for key, value in scores],
                },
            )
        )
        bind.execute(_scores.delete().where(where))
        bind.execute(_metrics.delete().where(_metrics.c.id == row["id"]))


def downgrade() -> None:
    """Downgrade schema."""
    bind = op.get_bind()
    rows = bind.execute(sa.select(_details).order_by(_details.c.id)).mappings().all()
    for row in rows:
        # A report made after the upgrade was never a metric: it comes back with no value (NULL).
        old = row["from_metric"] if isinstance(row["from_metric"], dict) else {}
        bind.execute(
            _metrics.insert().values(
                run_id=row["run_id"],
                dataset_id=row["dataset_id"],
                name=row["name"],
                value=old.get("value"),
                ci_low=old.get("ci_low"),
                ci_high=old.get("ci_high"),
                n=row["n"],
                higher_is_better=bool(old.get("higher_is_better", True)),
                signature=row["signature"],
                details=row["details"],
            )
        )
        scores = old.get("scores") or []
        if scores:
            bind.execute(
                _scores.insert(),
                [
                    {
                        "run_id": row["run_id"],
                        "dataset_id": row["dataset_id"],
                        "metric": row["name"],
                        "example_key": key,
                        "value": value,
                    }
                    for key, value in scores
                ],
            )
    with op.batch_alter_table('run_details', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_details_run_id'))

    op.drop_table('run_details')
