"""The platform service: where benches deliver certificates and anyone checks one.

`wipeagent platform serve` (cli.py) runs `PlatformService` (app.py) over a database
(db.py: PostgreSQL or SQLite through SQLAlchemy Core, schema by Alembic migrations):

- ingest.py rules (in wipeagent.uplink.ingest, shared with the reference receiver):
  mutual TLS, the client's station identity must be the certificate's station;
- ledger.py: each certificate stored once, its station's ledger checked as it arrives;
- queries.py: search by id, IMEI, serial, station, dates, outcome; ledger reports;
- tokens.py: bearer tokens for the query API;
- ratelimit.py: the public lookup's limit per client address;
- web/: the verification page the QR code opens (built from web-src/verify-page).

Needs the `platform` extra (`pip install 'wipeagent[platform]'`).
"""
