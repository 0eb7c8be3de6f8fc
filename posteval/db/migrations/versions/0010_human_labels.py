"""human labels: raters' scores and preferences imported from blinded exports

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

One new table. The downgrade drops it only while it is empty: raters' labels cannot be recomputed, so a
downgrade keeps them (an older posteval ignores the table) and the next upgrade finds them there.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("human_labels"):  # kept by an earlier downgrade
        return
    op.create_table(
        "human_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("example_key", sa.String(length=255), nullable=False),
        sa.Column("rater", sa.String(length=255), nullable=False),
        sa.Column("criterion", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("base_run_id", sa.String(length=32), nullable=True),
        sa.Column("export_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_human_labels_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["eval_runs.id"], name=op.f("fk_human_labels_run_id_eval_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_human_labels")),
        sa.UniqueConstraint(
            "run_id", "dataset_id", "kind", "example_key", "rater", "criterion",
            name="uq_human_labels_label",
        ),
    )
    op.create_index("ix_human_labels_run_kind", "human_labels", ["run_id", "kind"], unique=False)


def downgrade() -> None:
    labels = sa.table("human_labels", sa.column("id", sa.Integer))
    if op.get_bind().execute(sa.select(sa.func.count()).select_from(labels)).scalar():
        return  # people's labels are not recomputable: keep them for the next upgrade
    op.drop_index("ix_human_labels_run_kind", table_name="human_labels")
    op.drop_table("human_labels")
