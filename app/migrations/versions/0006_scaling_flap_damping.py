"""scaling: flap damping (the window's maximum, and the loop's damping state)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scaling_policies") as batch:
        batch.add_column(
            sa.Column(
                "scale_down_window_max_seconds",
                sa.Integer(),
                nullable=False,
                server_default="1200",
            )
        )
        batch.add_column(sa.Column("damping", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scaling_policies") as batch:
        batch.drop_column("damping")
        batch.drop_column("scale_down_window_max_seconds")
