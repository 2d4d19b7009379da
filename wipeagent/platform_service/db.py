"""The platform's database: tables (SQLAlchemy Core), engines, migrations (Alembic).

PostgreSQL (psycopg 3) in production, SQLite as the embedded default. One schema for
both; the migrations in `migrations/versions/` create and change it, never `create_all`.

    url = database_url("sqlite:///var/lib/wipeagent-platform/platform.sqlite3")
    migrate(url)                      # alembic upgrade head (idempotent)
    engine = async_engine(url)        # what the service uses

Times are stored as naive UTC (`UtcDateTime`), so range queries compare alike on both
databases; they come back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from wipeagent.errors import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the platform database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect
                             ) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

# One row per (organisation root, station id): station ids are only unique within an
# organisation, and two refurbishers may both have a "bench-01". `certificates` counts
# rows, `sequences` distinct sequence numbers (fewer with a fork), `max_sequence` the
# highest: the ledger has a gap exactly when sequences < max_sequence (a ledger starts at
# 1), so the common case needs no scan. The row is locked (FOR UPDATE) by every ingest of
# its station, which serialises the ledger checks of one station across processes.
stations = Table(
    "stations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("root_sha256", String(64), nullable=False),
    Column("station_id", String(64), nullable=False),
    Column("organisation", Text, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("certificates", Integer, nullable=False, server_default="0"),
    Column("sequences", BigInteger, nullable=False, server_default="0"),
    Column("max_sequence", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("root_sha256", "station_id", name="uq_stations_root_station"),
)

# Every certificate exactly once (primary key = its id; its sha256 is unique too). The
# searchable facts are copied out of the verified payload; `data` is the signed bytes.
certificates = Table(
    "certificates", metadata,
    Column("certificate_id", String(36), primary_key=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("station", Integer, ForeignKey("stations.id"), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("previous_hash", String(64), nullable=True),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("category", String(16), nullable=True),
    Column("platform", String(16), nullable=True),
    Column("manufacturer", Text, nullable=True),
    Column("model", Text, nullable=True),
    Column("serial", String(64), nullable=True),
    Column("development", Boolean, nullable=False),
    Column("client", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),
    # The platform's booking (trade-in order) the phone was matched to on the bench: the
    # certificate's `intake.reference` (schema v2; migration 0002).
    Column("booking_reference", String(100), nullable=True),
    Index("ix_certificates_station_sequence", "station", "sequence"),
    Index("ix_certificates_station_previous", "station", "previous_hash"),
    Index("ix_certificates_serial", "serial"),
    Index("ix_certificates_issued_at", "issued_at"),
    Index("ix_certificates_outcome_issued", "outcome", "issued_at"),
    Index("ix_certificates_booking_reference", "booking_reference"),
)

certificate_imeis = Table(
    "certificate_imeis", metadata,
    Column("certificate_id", String(36), ForeignKey("certificates.certificate_id"),
           primary_key=True),
    Column("imei", String(16), primary_key=True),
    Index("ix_certificate_imeis_imei", "imei"),
)

# Ledger problems found on ingest that stay true (a fork, a duplicate id, a broken link).
# Gaps are not stored: they close when the missing certificate arrives, so they are
# computed from `certificates` whenever asked.
ledger_problems = Table(
    "ledger_problems", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station", Integer, ForeignKey("stations.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("sequence", BigInteger, nullable=True),
    Column("certificate_id", String(36), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("other_certificate_id", String(36), nullable=True),
    Column("other_sha256", String(64), nullable=True),
    Column("message", Text, nullable=False),
    Column("detected_at", UtcDateTime, nullable=False),
    # The refused document of a duplicate_id (it is not in `certificates`): evidence.
    Column("evidence", LargeBinary, nullable=True),
    Index("ix_ledger_problems_station", "station", "kind"),
    UniqueConstraint("kind", "sha256", "other_sha256", name="uq_ledger_problems_pair"),
)

# Bearer tokens of platform engineers for the query API; only a SHA-256 is kept (the
# token is 256 random bits, so a fast hash is enough: there is nothing to brute-force).
api_tokens = Table(
    "api_tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
)


def database_url(text: str) -> URL:
    """Parse a database URL: `postgresql://...` (psycopg 3) or `sqlite:///FILE`."""
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {text!r}",
                          hint="use postgresql://USER@HOST:PORT/DB or sqlite:///FILE") from exc
    backend = url.get_backend_name()
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError("the SQLite database must be a file (sqlite:///FILE)")
        return url.set(drivername="sqlite")
    raise ConfigError(f"unsupported database {backend!r}",
                      hint="use PostgreSQL (postgresql://...) or SQLite (sqlite:///FILE)")


def is_sqlite(url: URL) -> bool:
    """Whether the URL names an SQLite file."""
    return url.get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a receipt means the certificate is on disk
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def async_engine(url: URL, *, pool_size: int = 10) -> AsyncEngine:
    """The service's engine: psycopg 3 (async) or aiosqlite."""
    if is_sqlite(url):
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url.set(drivername="sqlite+aiosqlite"))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size,
                               pool_pre_ping=True)


def alembic_config(url: URL) -> Any:
    """The Alembic configuration for this package's migrations and `url`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is ConfigParser-based: a literal % must be doubled.
    config.set_main_option(
        "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def migrate(url: URL, revision: str = "head") -> None:
    """Bring the schema to `revision` (default: the newest). Safe to run at every start."""
    from alembic import command

    if is_sqlite(url):
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def current_revision(url: URL) -> str | None:
    """The schema revision the database is at (None: not migrated yet)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head
