"""A private PostgreSQL server for tests and benchmarks (Debian's postgresql package).

    with PgServer.start() as pg:                    # initdb + pg_ctl start, own port/dir
        url = pg.create_database("t1")              # postgresql://postgres@127.0.0.1:P/t1

The cluster lives in a fresh directory under /tmp with its own port and Unix socket
directory, so it never touches a system cluster. PostgreSQL refuses to run as root: as
root the server runs as the `postgres` user the Debian package creates (`runuser`).
Tests use `durable=False` (fsync off: a crash of a test cluster loses nothing of value);
benchmarks keep the defaults so the figures include real commits.

The pytest fixtures are in tests/conftest.py (`pg_server`, `pg_url`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    versions = sorted((p for p in PG_BIN_ROOT.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def _free_port() -> int:
    # PostgreSQL cannot listen on port 0 and report the port, so ask the kernel for a
    # free one; start() retries with another if something takes it in between.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PgServer:
    """A running private cluster; `stop()` (or the context manager) removes it."""

    bin: Path
    directory: Path
    port: int
    user: str | None  # run server commands as this OS user (None: as ourselves)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True,
                              timeout=120, cwd=self.directory)

    @classmethod
    @contextmanager
    def start(cls, *, durable: bool = False, max_connections: int = 200,
              settings: dict[str, str] | None = None) -> Iterator[PgServer]:
        """initdb, start on a free port, yield, then stop and delete everything."""
        server = cls.launch(durable=durable, max_connections=max_connections,
                            settings=settings)
        try:
            yield server
        finally:
            server.stop()

    @classmethod
    def launch(cls, *, durable: bool = False, max_connections: int = 200,
               settings: dict[str, str] | None = None) -> PgServer:
        """initdb and start; the caller must `stop()`."""
        binary = pg_bin()
        if binary is None:
            raise RuntimeError("PostgreSQL server not installed (scripts/setup --test "
                               "installs Debian's postgresql)")
        user = "postgres" if os.geteuid() == 0 else None
        directory = Path(tempfile.mkdtemp(prefix="wipeagent-pg-"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        server = cls(binary, directory, 0, user)
        try:
            server._run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions")
            options = {
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": str(directory),
                "max_connections": str(max_connections),
                "shared_buffers": "128MB",
                **({} if durable else {"fsync": "off", "synchronous_commit": "off",
                                       "full_page_writes": "off"}),
                **(settings or {}),
            }
            for _attempt in range(5):
                server.port = _free_port()
                opts = " ".join(f"-c {k}={v}" for k, v in
                                {**options, "port": str(server.port)}.items())
                started = server._run("pg_ctl", "-D", str(server.data), "-l",
                                      str(directory / "server.log"), "-o", opts, "-w",
                                      "-t", "60", "start", check=False)
                if started.returncode == 0:
                    return server
                time.sleep(0.2)
            log = (directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")
        except BaseException:
            server.stop()
            raise

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy/psycopg URL for `database` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop",
                      check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
