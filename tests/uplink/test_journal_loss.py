"""The journal is precious: a lost, emptied, older or damaged journal never forks the
station chain, never issues a sequence number twice and never loses a certificate that
may not have reached the platform."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from uplink_fixtures import Bench, make_bench

from wipeagent.certs.verify import check_sequence, verify_certificate
from wipeagent.chainhead import (
    CHAIN_HEAD_FILE,
    ChainRecord,
    JournalReport,
    check_journal,
    exported,
    recover_journal,
)
from wipeagent.errors import JournalBehind, JournalDamaged, StoreError
from wipeagent.runner import EXIT_CONFIG
from wipeagent.store import CertificateRow, Store
from wipeagent.uplink.client import deliver_all
from wipeagent.uplink.outbox import Outbox


@asynccontextmanager
async def started(root: Path, issued: int = 0) -> AsyncIterator[tuple[Bench, JournalReport]]:
    """The agent's start-up on `root`: open the journal, check it against the record and
    the exported certificates."""
    store = await Store(root / "journal.sqlite3").open()
    try:
        bench = make_bench(root, store)
        bench.issued = issued
        report = await check_journal(store, bench.certifier.record, root / "certificates",
                                     list(bench.trust))  # type: ignore[arg-type]
        yield bench, report
    finally:
        await store.close()


def remove_journal(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / 'journal.sqlite3'}{suffix}").unlink(missing_ok=True)


def ledger(root: Path, bench: Bench) -> list[tuple[int, str, str | None]]:
    """Every exported certificate, verified: (sequence, sha256, previous hash); the
    chain has no gap, no fork and no duplicate."""
    verified = [verify_certificate(e.path.read_bytes(), trust_roots=bench.trust)  # type: ignore[arg-type]
                for e in exported(root / "certificates").get("bench-01", [])]
    assert check_sequence(verified) == [], check_sequence(verified)
    return [(v.sequence, v.sha256, v.previous_hash) for v in verified]


def held(root: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((root / CHAIN_HEAD_FILE).read_text())
    return doc


async def test_every_certificate_is_held_then_exported_and_recorded(tmp_path: Path) -> None:
    async with started(tmp_path) as (bench, report):
        assert report.heads == {} and not report.rebuilt
        rows = await bench.issue(3)
    doc = held(tmp_path)
    assert doc["heads"] == {"bench-01": {"sequence": 3, "sha256": rows[-1].sha256,
                                         "certificate_id": rows[-1].certificate_id}}
    assert doc["held"] == []  # exported, so no longer held
    assert [s for s, _, _ in ledger(tmp_path, bench)] == [1, 2, 3]


@pytest.mark.parametrize("how", ["deleted", "zero_length"])
async def test_a_lost_journal_neither_forks_nor_loses_a_certificate(
        tmp_path: Path, how: str) -> None:
    async with started(tmp_path) as (bench, _):
        rows = await bench.issue(3)
        async with bench.receiver() as receiver:  # the first one reached the platform
            await Outbox(bench.store).mark_delivered(rows[0].certificate_id, {"status": 201})
            assert receiver.held() == {}
    remove_journal(tmp_path)
    if how == "zero_length":
        (tmp_path / "journal.sqlite3").write_bytes(b"")
    async with started(tmp_path, issued=3) as (bench, report):
        assert report.rebuilt and report.imported == 3
        assert report.heads["bench-01"].sequence == 3
        # Nothing lost: every certificate is back and waiting to be delivered (the
        # platform answers 200 for the ones it already holds).
        assert [r.certificate_id for r in await bench.store.certificates()] == [
            r.certificate_id for r in rows]
        assert [r.data for r in await bench.store.certificates()] == [r.data for r in rows]
        assert (await Outbox(bench.store).counts()).pending == 3
        # No fork: the next certificate continues the chain.
        (fourth,) = await bench.issue(1)
        assert (fourth.sequence, fourth.previous_sha256) == (4, rows[-1].sha256)
        async with bench.receiver() as receiver:
            report_ = await deliver_all(bench.store, url=receiver.url,
                                        ssl_context=bench.client_ssl, clock=bench.clock)
            assert report_.delivered == 4 and set(receiver.held()) == {
                r.certificate_id for r in [*rows, fourth]}
    assert [s for s, _, _ in ledger(tmp_path, bench)] == [1, 2, 3, 4]


async def test_a_certificate_committed_but_not_exported_survives_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash after the commit, before the export (the record still holds the bytes),
    then the journal is lost: the held copy is imported."""
    async with started(tmp_path) as (bench, _):
        await bench.issue(2)

        def crash(_row: CertificateRow) -> Path:
            raise OSError("killed before the export")

        monkeypatch.setattr(bench.certifier, "export", crash)
        with pytest.raises(OSError):
            await bench.issue(1)
        (third,) = [r for r in await bench.store.certificates() if r.sequence == 3]
    assert [h["certificate_id"] for h in held(tmp_path)["held"]] == [  # type: ignore[index, union-attr]
        third.certificate_id]
    assert not any(e.sequence == 3 for e in exported(tmp_path / "certificates")["bench-01"])
    remove_journal(tmp_path)
    async with started(tmp_path, issued=3) as (bench, report):
        assert report.rebuilt and report.imported == 3
        (fourth,) = await bench.issue(1)
        assert (fourth.sequence, fourth.previous_sha256) == (4, third.sha256)
    assert [s for s, _, _ in ledger(tmp_path, bench)] == [1, 2, 3, 4]
    assert held(tmp_path)["held"] == []


async def test_a_held_certificate_never_committed_is_dropped(tmp_path: Path) -> None:
    """Crash between holding and committing, journal intact: that certificate never
    existed outside the record; the sequence is still free and is used once."""
    async with started(tmp_path) as (bench, _):
        await bench.issue(1)

        def fill(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count = {pages}").fetchone()

        await bench.store.run(fill)
        with pytest.raises(StoreError):
            await bench.issue(1)  # held, then the commit failed: disk full
        assert len(held(tmp_path)["held"]) == 1  # type: ignore[arg-type]
        # Signing for #2 again (a retried commit): the first #2 is no longer held.
        await bench.store.run(
            lambda db: db.execute("PRAGMA max_page_count = 1073741823").fetchone())
        first = held(tmp_path)["held"][0]["certificate_id"]  # type: ignore[index]
        (second,) = await bench.issue(1)
        assert second.sequence == 2 and second.certificate_id != first
        assert held(tmp_path)["held"] == []
    remove_journal(tmp_path)  # and the journal is lost: only one #2 comes back
    async with started(tmp_path, issued=3) as (bench, report):
        assert report.rebuilt and report.imported == 2
        assert [r.certificate_id for r in await bench.store.certificates()][-1] == (
            second.certificate_id)
    assert [s for s, _, _ in ledger(tmp_path, bench)] == [1, 2]


async def test_a_held_certificate_never_committed_is_dropped_at_start(
        tmp_path: Path) -> None:
    async with started(tmp_path) as (bench, _):
        await bench.issue(1)

        def fill(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count = {pages}").fetchone()

        await bench.store.run(fill)
        with pytest.raises(StoreError):
            await bench.issue(1)
    async with started(tmp_path, issued=2) as (bench, report):
        assert report.dropped == 1 and not report.rebuilt
        assert held(tmp_path)["held"] == []
        (second,) = await bench.issue(1)
        assert second.sequence == 2
    assert [s for s, _, _ in ledger(tmp_path, bench)] == [1, 2]


async def test_exports_lost_too_the_record_keeps_the_chain_going(tmp_path: Path) -> None:
    async with started(tmp_path) as (bench, _):
        rows = await bench.issue(3)
    remove_journal(tmp_path)
    for e in exported(tmp_path / "certificates")["bench-01"]:
        if e.sequence == 3:
            e.path.unlink()
    async with started(tmp_path, issued=3) as (bench, report):
        assert report.imported == 2 and report.heads["bench-01"].sequence == 3
        (fourth,) = await bench.issue(1)
        assert (fourth.sequence, fourth.previous_sha256) == (4, rows[2].sha256)


async def test_a_journal_that_went_backwards_is_refused_then_recovered(
        tmp_path: Path) -> None:
    async with started(tmp_path) as (bench, _):
        rows = await bench.issue(2)
        await Outbox(bench.store).mark_delivered(rows[0].certificate_id, {"status": 201})
        await bench.store.run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        shutil.copy(tmp_path / "journal.sqlite3", tmp_path / "backup.sqlite3")
        rows += await bench.issue(2)
    remove_journal(tmp_path)
    shutil.copy(tmp_path / "backup.sqlite3", tmp_path / "journal.sqlite3")  # "restored"
    with pytest.raises(JournalBehind) as caught:
        async with started(tmp_path, issued=4):
            pass
    message = str(caught.value)
    assert "went backwards" in message and "#2" in message and "#4" in message
    assert "wipeagent journal recover" in caught.value.hint
    report = await recover_journal(tmp_path / "journal.sqlite3",
                                   ChainRecord(tmp_path / CHAIN_HEAD_FILE),
                                   tmp_path / "certificates", list(bench.trust))  # type: ignore[arg-type]
    assert report.imported == 2 and report.kept_aside is None  # kept: it links
    async with started(tmp_path, issued=4) as (bench, report):
        assert not report.rebuilt
        counts = await Outbox(bench.store).counts()
        assert (counts.delivered, counts.pending) == (1, 3)  # its receipt was kept
        (fifth,) = await bench.issue(1)
        assert (fifth.sequence, fifth.previous_sha256) == (5, rows[-1].sha256)
    assert [s for s, _, _ in ledger(tmp_path, bench)] == [1, 2, 3, 4, 5]


async def test_a_journal_of_another_chain_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    async with started(other) as (bench, _):
        await bench.issue(2)
    async with started(tmp_path) as (bench, _):
        await bench.issue(2)
    remove_journal(tmp_path)
    shutil.copy(other / "journal.sqlite3", tmp_path / "journal.sqlite3")
    with pytest.raises(JournalBehind, match="another chain"):
        async with started(tmp_path, issued=2):
            pass


@pytest.mark.parametrize("damage", ["zeroed_header", "truncated"])
async def test_a_damaged_journal_is_a_clear_error_then_recovered(
        tmp_path: Path, damage: str) -> None:
    async with started(tmp_path) as (bench, _):
        rows = await bench.issue(40)
        await bench.store.run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    journal = tmp_path / "journal.sqlite3"
    data = journal.read_bytes()
    damaged = (b"\0" * 100 + data[100:] if damage == "zeroed_header"
               else data[: len(data) // 2])
    journal.write_bytes(damaged)
    with pytest.raises(JournalDamaged) as caught:
        async with started(tmp_path, issued=40):
            pass
    assert "damaged" in str(caught.value) and "disk space" not in caught.value.hint
    assert "wipeagent journal recover" in caught.value.hint
    report = await recover_journal(journal, ChainRecord(tmp_path / CHAIN_HEAD_FILE),
                                   tmp_path / "certificates", list(bench.trust))  # type: ignore[arg-type]
    assert report.kept_aside is not None
    assert report.kept_aside.read_bytes() == damaged  # kept aside, never deleted
    assert report.imported == 40
    async with started(tmp_path, issued=40) as (bench, _):
        (next_,) = await bench.issue(1)
        assert (next_.sequence, next_.previous_sha256) == (41, rows[-1].sha256)


CONFIG = """\
state_dir = "{state}"
[station]
id = "bench-01"
[policy]
erase = "auto"
[android]
endpoints = ["127.0.0.1:9"]
[usb]
enabled = false
[ios]
enabled = false
[control]
socket = "{state}/control.sock"
group = ""
[page]
listen = "127.0.0.1:0"
[certificates]
allow_development_pki = true
"""


def run_agent(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wipeagent.runner", "run", "--config", str(config),
         "--log-format", "console", "--once"], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}, check=False)


async def test_the_agent_refuses_with_exit_78_and_the_recover_command_fixes_it(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(state=state))
    async with started(state) as (bench, _):
        await bench.issue(3)
    journal = state / "journal.sqlite3"
    remove_journal(state)
    journal.write_bytes(b"SQLite format 3\0" + b"\0" * 4000)  # a header, then nothing
    proc = await asyncio.to_thread(run_agent, config)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    refused = [line for line in proc.stderr.splitlines() if "not started" in line]
    assert len(refused) == 1 and "damaged" in refused[0], proc.stderr
    assert "wipeagent journal recover" in refused[0]
    assert "Traceback" not in proc.stderr and "disk space" not in proc.stderr
    fixed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "wipeagent.cli", "journal", "recover",
                         "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False)
    assert fixed.returncode == 0, fixed.stderr
    assert "bench-01 continues at #4" in fixed.stdout
    assert "3 certificate(s) re-imported" in fixed.stdout and "kept at" in fixed.stdout
    async with started(state, issued=3) as (bench, report):
        assert not report.rebuilt
        (fourth,) = await bench.issue(1)
        assert fourth.sequence == 4
