"""Certificates searchable by booking reference (schema v2's `intake.reference`).

Adds `certificates.booking_reference` (indexed) and fills it for the certificates
already held, from their signed payloads: every held certificate was verified on
ingest, so its payload is read here without verifying it again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import base64
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BATCH = 500


def booking_reference(data: bytes) -> str | None:
    """`intake.reference` of a stored certificate (a flattened JWS), None if it has none."""
    try:
        jws = json.loads(data)
        encoded = jws["payload"]
        payload: Any = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        intake = payload.get("intake") if isinstance(payload, dict) else None
        reference = intake.get("reference") if isinstance(intake, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
    return reference if isinstance(reference, str) and reference else None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("booking_reference", sa.String(100), nullable=True))
        batch.create_index("ix_certificates_booking_reference", ["booking_reference"])
    certificates = sa.table("certificates", sa.column("certificate_id", sa.String),
                            sa.column("data", sa.LargeBinary),
                            sa.column("booking_reference", sa.String))
    conn = op.get_bind()
    last = ""
    while True:  # in batches of primary keys: a large table is never read at once
        rows = conn.execute(
            sa.select(certificates.c.certificate_id, certificates.c.data)
            .where(certificates.c.certificate_id > last)
            .order_by(certificates.c.certificate_id).limit(BATCH)).all()
        if not rows:
            break
        found = [{"b_id": cid, "b_reference": ref} for cid, data in rows
                 if (ref := booking_reference(bytes(data))) is not None]
        if found:
            conn.execute(certificates.update()
                         .where(certificates.c.certificate_id == sa.bindparam("b_id"))
                         .values(booking_reference=sa.bindparam("b_reference")), found)
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_index("ix_certificates_booking_reference")
        batch.drop_column("booking_reference")
