"""comparison core: per-example sufficient statistics, metric aggregation, run output settings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

Only new tables and added nullable columns: no table is rebuilt on SQLite (eval_runs is a parent table),
and the downgrade drops exactly what the upgrade added (SQLite >= 3.35 drops a column in place).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('example_stats',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=255), nullable=False),
    sa.Column('example_key', sa.String(length=255), nullable=False),
    sa.Column('stats', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_example_stats_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['run_id'], ['eval_runs.id'], name=op.f('fk_example_stats_run_id_eval_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_example_stats')),
    sa.UniqueConstraint('run_id', 'dataset_id', 'metric', 'example_key', name=op.f('uq_example_stats_run_id_dataset_id_metric_example_key'))
    )
    op.create_index('ix_example_stats_run_metric', 'example_stats', ['run_id', 'metric'], unique=False)
    # Plain ADD COLUMN (no batch): SQLite adds a nullable column in place, without copying the table.
    op.add_column('eval_runs', sa.Column('output_settings', sa.JSON(), nullable=True))
    op.add_column('eval_runs', sa.Column('config_hash', sa.String(length=64), nullable=True))
    op.add_column('metrics', sa.Column('aggregation', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('metrics', 'aggregation')
    op.drop_column('eval_runs', 'config_hash')
    op.drop_column('eval_runs', 'output_settings')
    op.drop_index('ix_example_stats_run_metric', table_name='example_stats')
    op.drop_table('example_stats')
