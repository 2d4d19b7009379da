"""The Certifier the sessions use: sign, self-verify, and store exactly once.

The signing itself (format, JWS, self-verification) lives in wipeagent.certs; this module
ties it to the journal so that a certificate and its place in the station chain are
committed in one transaction, and keeps the two copies that a lost journal cannot take
along (wipeagent.chainhead): before the commit the signed certificate is held in the
chain-head record beside the journal; after it, the certificate is exported to a file and
the record's head advances.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from wipeagent.certs.issue import issue_certificate
from wipeagent.certs.signer import Signer
from wipeagent.chainhead import (
    CHAIN_HEAD_FILE,
    ChainRecord,
    Held,
    export_certificate,
)
from wipeagent.chainhead import certificate_filename as _filename
from wipeagent.models import SessionRecord
from wipeagent.store import CertificateRow, ChainHead, NewCertificate, Store


def certificate_filename(row: CertificateRow) -> str:
    """File name of a stored certificate: sequence and id only (never phone data)."""
    return _filename(row.station_id, row.sequence, row.certificate_id)


class StoreCertifier:
    """Issues each session's certificate into the journal, then exports it to `out_dir`.

    `record` is the chain-head record (default: `chain-head.json` beside the journal)."""

    def __init__(
        self,
        store: Store,
        signer: Signer,
        *,
        out_dir: Path,
        development: bool,
        verification_url: str | None = None,
        record: ChainRecord | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.out_dir = out_dir
        self.development = development
        self.verification_url = verification_url
        self.record = record or ChainRecord(store.path.parent / CHAIN_HEAD_FILE)

    async def certify(self, record: SessionRecord) -> CertificateRow:
        station_id = record.station.station_id

        def issue(head: ChainHead) -> NewCertificate:
            issued = issue_certificate(
                record,
                self.signer,
                sequence=head.sequence + 1,
                previous_hash=head.sha256,
                development=self.development,
                verification_url=self.verification_url,
            )
            # Held (fsync) before the commit: once committed it may leave the bench, so a
            # copy must exist that the journal's loss cannot take along.
            self.record.hold(head, station_id, Held(
                station_id, head.sequence + 1, issued.sha256, issued.certificate_id,
                head.sha256, issued.data))
            return NewCertificate(issued.certificate_id, issued.sha256, record.outcome.value,
                                  issued.data)

        row = await self.store.append_certificate(record.session_id, station_id, issue)
        # fsync can take milliseconds on a bench PC's flash: keep it off the event loop.
        await asyncio.to_thread(self.export, row)
        return row

    def path_for(self, row: CertificateRow) -> Path:
        return self.out_dir / certificate_filename(row)

    def export(self, row: CertificateRow) -> Path:
        """Write the certificate file atomically (the journal copy is the master), then
        settle it in the chain-head record."""
        path = export_certificate(self.out_dir, row)
        self.record.settle([row])
        return path
