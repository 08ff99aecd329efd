"""Unfinished responses are owned by the process that runs them: its id, its heartbeat, and a cancel asked of it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 00:00:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("responses", sa.Column("owner", sa.String(64)))
    op.add_column("responses", sa.Column("heartbeat", sa.Float))
    op.add_column("responses", sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_responses_status", "responses", ["status"])


def downgrade() -> None:
    op.drop_index("ix_responses_status", table_name="responses")
    with op.batch_alter_table("responses") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("cancel_requested")
        batch.drop_column("heartbeat")
        batch.drop_column("owner")
