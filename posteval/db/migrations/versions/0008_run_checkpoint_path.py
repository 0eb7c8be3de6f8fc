"""a run keeps its checkpoint's path and step: eval_runs.checkpoint_path and eval_runs.training_step

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-30

Checkpoints are stored by content, and their path follows the latest sighting: evaluating a final folder
with the same weights as ``checkpoint-30`` moved every earlier run of those weights to the new folder. The
run now keeps the path (and training step) it was evaluated at. Added nullable columns only, backfilled
from each run's checkpoint row; the downgrade drops them (the checkpoint row still holds a path and step).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_runs = sa.table(
    "eval_runs",
    sa.column("checkpoint_id", sa.Integer),
    sa.column("checkpoint_path", sa.Text),
    sa.column("training_step", sa.Integer),
)
_checkpoints = sa.table(
    "checkpoints",
    sa.column("id", sa.Integer),
    sa.column("path", sa.Text),
    sa.column("training_step", sa.Integer),
)


def upgrade() -> None:
    """Upgrade schema."""
    # Plain ADD COLUMN (no batch): SQLite adds a nullable column in place, without copying the table.
    op.add_column('eval_runs', sa.Column('checkpoint_path', sa.Text(), nullable=True))
    op.add_column('eval_runs', sa.Column('training_step', sa.Integer(), nullable=True))
    of_run = _checkpoints.c.id == _runs.c.checkpoint_id
    op.get_bind().execute(
        _runs.update().values(
            checkpoint_path=sa.select(_checkpoints.c.path).where(of_run).scalar_subquery(),
            training_step=sa.select(_checkpoints.c.training_step).where(of_run).scalar_subquery(),
        )
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('eval_runs', 'training_step')
    op.drop_column('eval_runs', 'checkpoint_path')
