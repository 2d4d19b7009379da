"""The Certifier the sessions use: sign, self-verify, and store exactly once.

The signing itself (format, JWS, self-verification) lives in wipeagent.certs; this module
ties it to the journal so that a certificate and its place in the station chain are
committed in one transaction, and writes a copy of each certificate to a directory.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from wipeagent.certs.issue import issue_certificate
from wipeagent.certs.signer import Signer
from wipeagent.models import SessionRecord
from wipeagent.store import CertificateRow, ChainHead, NewCertificate, Store


def certificate_filename(row: CertificateRow) -> str:
    """File name of a stored certificate: sequence and id only (never phone data)."""
    return f"{row.station_id}-{row.sequence:06d}-{row.certificate_id}.jws.json"


class StoreCertifier:
    """Issues each session's certificate into the journal, then exports it to `out_dir`."""

    def __init__(
        self,
        store: Store,
        signer: Signer,
        *,
        out_dir: Path,
        development: bool,
        verification_url: str | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.out_dir = out_dir
        self.development = development
        self.verification_url = verification_url

    async def certify(self, record: SessionRecord) -> CertificateRow:
        def issue(head: ChainHead) -> NewCertificate:
            issued = issue_certificate(
                record,
                self.signer,
                sequence=head.sequence + 1,
                previous_hash=head.sha256,
                development=self.development,
                verification_url=self.verification_url,
            )
            return NewCertificate(issued.certificate_id, issued.sha256, record.outcome.value,
                                  issued.data)

        row = await self.store.append_certificate(
            record.session_id, record.station.station_id, issue
        )
        # fsync can take milliseconds on a bench PC's flash: keep it off the event loop.
        await asyncio.to_thread(self.export, row)
        return row

    def path_for(self, row: CertificateRow) -> Path:
        return self.out_dir / certificate_filename(row)

    def export(self, row: CertificateRow) -> Path:
        """Write the certificate file atomically (the journal copy is the master)."""
        path = self.path_for(row)
        if path.exists():
            return path
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(row.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path
