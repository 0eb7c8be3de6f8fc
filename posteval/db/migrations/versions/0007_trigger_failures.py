"""trigger failures: triggered flow runs that failed before a run row could exist

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

A triggered evaluation whose suite or checkpoint cannot be resolved (a missing file, a folder that never
completed) has nothing for a run row to point at; it is kept here with its flow run id and the reason,
so `posteval runs list --status failed` shows it. Only a new table. Downgrade drops it when it is empty and
otherwise leaves it in place (older versions never read it), so going back a version never deletes history;
upgrading again then finds it and keeps its rows.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("trigger_failures"):  # kept by an earlier downgrade
        return
    op.create_table(
        "trigger_failures",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("suite", sa.Text(), nullable=True),
        sa.Column("model_name", sa.String(length=255), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_failures")),
    )
    op.create_index("ix_trigger_failures_created_at", "trigger_failures", ["created_at"], unique=False)
    op.create_index(
        op.f("ix_trigger_failures_flow_run_id"), "trigger_failures", ["flow_run_id"], unique=False
    )


def downgrade() -> None:
    failures = sa.table("trigger_failures", sa.column("id", sa.String))
    if op.get_bind().execute(sa.select(sa.func.count()).select_from(failures)).scalar():
        return  # recorded failures are history: keep them for the next upgrade
    op.drop_index(op.f("ix_trigger_failures_flow_run_id"), table_name="trigger_failures")
    op.drop_index("ix_trigger_failures_created_at", table_name="trigger_failures")
    op.drop_table("trigger_failures")
