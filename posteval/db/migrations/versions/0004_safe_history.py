"""safe history: run lease columns, status checks, one-of baselines, example scores tied to their metric

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Every table rebuild below happens on SQLite only (batch mode), with foreign keys off (env.py), so no
child row is touched; PostgreSQL gets plain ALTER TABLE statements.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

RUN_STATUS = "status IN ('pending', 'running', 'succeeded', 'failed')"
GATE_STATUS = "gate_status IN ('passed', 'failed', 'no_baseline', 'incomparable')"
RUN_OR_CHECKPOINT = "(run_id IS NULL) <> (checkpoint_id IS NULL)"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint(op.f('ck_eval_runs_status'), RUN_STATUS)
        batch_op.create_check_constraint(op.f('ck_eval_runs_gate_status'), GATE_STATUS)

    with op.batch_alter_table('baselines', schema=None) as batch_op:
        batch_op.create_check_constraint(op.f('ck_baselines_run_or_checkpoint'), RUN_OR_CHECKPOINT)

    with op.batch_alter_table('example_scores', schema=None) as batch_op:
        batch_op.create_foreign_key(
            'fk_example_scores_metric_metrics',
            'metrics',
            ['run_id', 'dataset_id', 'metric'],
            ['run_id', 'dataset_id', 'name'],
            ondelete='CASCADE',
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('example_scores', schema=None) as batch_op:
        batch_op.drop_constraint('fk_example_scores_metric_metrics', type_='foreignkey')

    with op.batch_alter_table('baselines', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_baselines_run_or_checkpoint'), type_='check')

    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_eval_runs_gate_status'), type_='check')
        batch_op.drop_constraint(op.f('ck_eval_runs_status'), type_='check')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('claim_id')
