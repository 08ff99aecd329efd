"""Threads, their messages, assistants, and the assistants attached to threads.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("tool_resources", sa.JSON),
    )
    op.create_table(
        "messages",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("thread_id", sa.String(64), sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.JSON, nullable=False),
        sa.Column("file_ids", sa.JSON, nullable=False),
        sa.Column("attachments", sa.JSON),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("assistant_id", sa.String(64)),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_index("ix_messages_thread_order", "messages", ["thread_id", "created_at", "seq"])
    op.create_table(
        "assistants",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("instructions", sa.Text),
        sa.Column("avatar", sa.Text),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("tool_resources", sa.JSON),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("temperature", sa.Float),
        sa.Column("top_p", sa.Float),
        sa.Column("response_format", sa.JSON),
    )
    op.create_table(
        "thread_assistants",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("thread_id", sa.String(64), sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assistant_id", sa.String(64), sa.ForeignKey("assistants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("overrides", sa.JSON, nullable=False),
        sa.UniqueConstraint("thread_id", "assistant_id", name="uq_thread_assistants_pair"),
    )


def downgrade() -> None:
    op.drop_table("thread_assistants")
    op.drop_table("assistants")
    op.drop_index("ix_messages_thread_order", table_name="messages")
    op.drop_table("messages")
    op.drop_table("threads")
