"""example detail: what happened on an example beyond its score (a code problem's executions)

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-30

One added nullable JSON column: no table is rebuilt on SQLite (example_scores keeps its foreign keys).
The downgrade keeps every detail: it moves them into their metric row's ``details`` under STASH (a map
from example key to detail), and the upgrade moves them back, so down and up again loses nothing.
"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

STASH = "__example_details_0009__"

metrics = sa.table(
    'metrics',
    sa.column('id', sa.Integer),
    sa.column('run_id', sa.String),
    sa.column('dataset_id', sa.Integer),
    sa.column('name', sa.String),
    sa.column('details', sa.JSON),
)
scores = sa.table(
    'example_scores',
    sa.column('id', sa.Integer),
    sa.column('run_id', sa.String),
    sa.column('dataset_id', sa.Integer),
    sa.column('metric', sa.String),
    sa.column('example_key', sa.String),
    sa.column('detail', sa.JSON),
)


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('example_scores', sa.Column('detail', sa.JSON(), nullable=True))
    bind = op.get_bind()
    for metric_id, run_id, dataset_id, name, details in bind.execute(sa.select(metrics)).all():
        if not (isinstance(details, dict) and STASH in details):
            continue
        for key, detail in details[STASH].items():
            bind.execute(
                scores.update()
                .where(
                    scores.c.run_id == run_id,
                    scores.c.dataset_id == dataset_id,
                    scores.c.metric == name,
                    scores.c.example_key == key,
                )
                .values(detail=detail)
            )
        rest = {k: v for k, v in details.items() if k != STASH}
        bind.execute(metrics.update().where(metrics.c.id == metric_id).values(details=rest))


def downgrade() -> None:
    """Downgrade schema."""
    bind = op.get_bind()
    stashed: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    rows = bind.execute(
        sa.select(scores.c.run_id, scores.c.dataset_id, scores.c.metric, scores.c.example_key, scores.c.detail)
    ).all()
    for run_id, dataset_id, metric, key, detail in rows:
        if detail is not None:
            stashed.setdefault((run_id, dataset_id, metric), {})[key] = detail
    for (run_id, dataset_id, name), details in stashed.items():
        found = bind.execute(
            sa.select(metrics.c.id, metrics.c.details).where(
                metrics.c.run_id == run_id, metrics.c.dataset_id == dataset_id, metrics.c.name == name
            )
        ).first()
        if found is not None:
            current = found[1] if isinstance(found[1], dict) else {}
            bind.execute(
                metrics.update().where(metrics.c.id == found[0]).values(details={**current, STASH: details})
            )
    op.drop_column('example_scores', 'detail')
