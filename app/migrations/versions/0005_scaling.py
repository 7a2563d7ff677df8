"""scaling policies and decisions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.core.database

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scaling_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("min_workers", sa.Integer(), nullable=True),
        sa.Column("max_workers", sa.Integer(), nullable=True),
        sa.Column("tasks_per_worker", sa.Integer(), nullable=True),
        sa.Column("scale_up_limit", sa.Integer(), nullable=False),
        sa.Column("scale_up_limit_kind", sa.String(length=16), nullable=False),
        sa.Column("scale_down_window_seconds", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=True),
        sa.Column("updated_at", app.core.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recommendations", sa.JSON(), nullable=False),
        sa.Column("last_reason", sa.String(length=32), nullable=True),
        sa.Column("last_desired", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_scaling_policies_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scaling_policies")),
        sa.UniqueConstraint("deployment_id", name=op.f("uq_scaling_policies_deployment_id")),
    )
    op.create_table(
        "scaling_decisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("decided_at", app.core.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("queued", sa.Double(), nullable=True),
        sa.Column("running", sa.Double(), nullable=True),
        sa.Column("tasks_per_worker", sa.Integer(), nullable=False),
        sa.Column("min_workers", sa.Integer(), nullable=False),
        sa.Column("max_workers", sa.Integer(), nullable=False),
        sa.Column("current", sa.Integer(), nullable=False),
        sa.Column("recommended", sa.Integer(), nullable=True),
        sa.Column("desired", sa.Integer(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_scaling_decisions_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scaling_decisions")),
    )
    with op.batch_alter_table("scaling_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scaling_decisions_decided_at"), ["decided_at"], unique=False
        )
        batch_op.create_index(
            "ix_scaling_decisions_deployment_id_decided_at",
            ["deployment_id", "decided_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("scaling_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_scaling_decisions_deployment_id_decided_at")
        batch_op.drop_index(batch_op.f("ix_scaling_decisions_decided_at"))
    op.drop_table("scaling_decisions")
    op.drop_table("scaling_policies")
