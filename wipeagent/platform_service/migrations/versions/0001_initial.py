"""The platform's first schema: stations, certificates, IMEIs, ledger problems, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from wipeagent.platform_service.db import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("root_sha256", sa.String(64), nullable=False),
        sa.Column("station_id", sa.String(64), nullable=False),
        sa.Column("organisation", sa.Text, nullable=False),
        sa.Column("first_seen", UtcDateTime, nullable=False),
        sa.Column("last_seen", UtcDateTime, nullable=False),
        sa.Column("certificates", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sequences", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("max_sequence", sa.BigInteger, nullable=False, server_default="0"),
        sa.UniqueConstraint("root_sha256", "station_id", name="uq_stations_root_station"),
    )
    op.create_table(
        "certificates",
        sa.Column("certificate_id", sa.String(36), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("station", sa.Integer, sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("previous_hash", sa.String(64), nullable=True),
        sa.Column("issued_at", UtcDateTime, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("category", sa.String(16), nullable=True),
        sa.Column("platform", sa.String(16), nullable=True),
        sa.Column("manufacturer", sa.Text, nullable=True),
        sa.Column("model", sa.Text, nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.Column("development", sa.Boolean, nullable=False),
        sa.Column("client", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_certificates_station_sequence", "certificates",
                    ["station", "sequence"])
    op.create_index("ix_certificates_station_previous", "certificates",
                    ["station", "previous_hash"])
    op.create_index("ix_certificates_serial", "certificates", ["serial"])
    op.create_index("ix_certificates_issued_at", "certificates", ["issued_at"])
    op.create_index("ix_certificates_outcome_issued", "certificates", ["outcome", "issued_at"])
    op.create_table(
        "certificate_imeis",
        sa.Column("certificate_id", sa.String(36),
                  sa.ForeignKey("certificates.certificate_id"), primary_key=True),
        sa.Column("imei", sa.String(16), primary_key=True),
    )
    op.create_index("ix_certificate_imeis_imei", "certificate_imeis", ["imei"])
    op.create_table(
        "ledger_problems",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("station", sa.Integer, sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=True),
        sa.Column("certificate_id", sa.String(36), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("other_certificate_id", sa.String(36), nullable=True),
        sa.Column("other_sha256", sa.String(64), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("detected_at", UtcDateTime, nullable=False),
        sa.Column("evidence", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("kind", "sha256", "other_sha256", name="uq_ledger_problems_pair"),
    )
    op.create_index("ix_ledger_problems_station", "ledger_problems", ["station", "kind"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.Column("last_used_at", UtcDateTime, nullable=True),
    )


def downgrade() -> None:
    for table in ("api_tokens", "ledger_problems", "certificate_imeis", "certificates",
                  "stations"):
        op.drop_table(table)
