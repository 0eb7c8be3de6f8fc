"""example detail: what happened on an example beyond its score (a code problem's executions)

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-30

One added nullable JSON column: no table is rebuilt on SQLite (example_scores keeps its foreign keys),
and the downgrade drops exactly what the upgrade added (SQLite >= 3.35 drops a column in place).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('example_scores', sa.Column('detail', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('example_scores', 'detail')
