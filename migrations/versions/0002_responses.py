"""Responses with their input items, and conversations with their items.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:00:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("background", sa.Boolean, nullable=False),
        sa.Column("previous_response_id", sa.String(64)),
        sa.Column("object", sa.JSON, nullable=False),
    )
    op.create_table(
        "response_items",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("response_id", sa.String(64), sa.ForeignKey("responses.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("item", sa.JSON, nullable=False),
    )
    op.create_index("ix_response_items_order", "response_items", ["response_id", "created_at", "seq"])
    op.create_table(
        "conversations",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
    )
    op.create_table(
        "conversation_items",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("conversation_id", sa.String(64), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("item", sa.JSON, nullable=False),
    )
    op.create_index("ix_conversation_items_order", "conversation_items", ["conversation_id", "created_at", "seq"])


def downgrade() -> None:
    op.drop_index("ix_conversation_items_order", table_name="conversation_items")
    op.drop_table("conversation_items")
    op.drop_table("conversations")
    op.drop_index("ix_response_items_order", table_name="response_items")
    op.drop_table("response_items")
    op.drop_table("responses")
