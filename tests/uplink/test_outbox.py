"""The outbox is the journal's certificates without a receipt; it survives restarts;
`wipeagent outbox` shows pending and parked ones."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from uplink_fixtures import Bench

from wipeagent.store import Store
from wipeagent.uplink.cli import cmd_outbox, outbox_counts, read_outbox, register
from wipeagent.uplink.outbox import Outbox


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def test_new_certificates_are_pending_and_due(bench: Bench) -> None:
    rows = await bench.issue(3)
    outbox = await Outbox(bench.store).open()
    items = await outbox.items()
    assert [i.certificate_id for i in items] == [r.certificate_id for r in rows]
    assert all(i.state == "pending" and i.attempts == 0 for i in items)
    item, later = await outbox.next_due(datetime.now(UTC))
    assert item is not None and item.certificate_id == rows[0].certificate_id
    assert item.data == rows[0].data and later is None


async def test_states_and_next_due(bench: Bench) -> None:
    a, b, c = await bench.issue(3)
    outbox = await Outbox(bench.store).open()
    now = datetime.now(UTC)
    await outbox.mark_delivered(a.certificate_id, {"status": 201})
    await outbox.mark_retry(b.certificate_id, "HTTP 503", now + timedelta(hours=1))
    await outbox.mark_parked(c.certificate_id, "HTTP 422: bad_signature\n<b>x</b>")
    counts = await outbox.counts()
    assert (counts.pending, counts.parked, counts.delivered, counts.depth) == (1, 1, 1, 2)
    item, later = await outbox.next_due(now)
    assert item is None and later is not None
    assert abs((later - (now + timedelta(hours=1))).total_seconds()) < 1
    item, _ = await outbox.next_due(now + timedelta(hours=2))
    assert item is not None and item.certificate_id == b.certificate_id
    parked = [i for i in await outbox.items() if i.state == "parked"]
    assert parked[0].last_error == "HTTP 422: bad_signature <b>x</b>"  # one line
    assert parked[0].attempts == 1
    assert await outbox.requeue(c.certificate_id) == 1
    assert (await outbox.counts()).parked == 0


async def test_outbox_survives_a_restart(tmp_path: Path) -> None:
    from uplink_fixtures import make_bench

    async with Store(tmp_path / "journal.sqlite3") as store:
        rows = await make_bench(tmp_path, store).issue(2)
        outbox = await Outbox(store).open()
        await outbox.mark_retry(rows[0].certificate_id, "connection refused",
                                datetime.now(UTC) + timedelta(minutes=5))
    async with Store(tmp_path / "journal.sqlite3") as reopened:
        again = await Outbox(reopened).open()
        items = {i.certificate_id: i for i in await again.items()}
        assert items[rows[0].certificate_id].attempts == 1
        assert items[rows[0].certificate_id].last_error == "connection refused"
        assert items[rows[1].certificate_id].state == "pending"
        assert (await again.next_due(datetime.now(UTC)))[0].certificate_id == (  # type: ignore[union-attr]
            rows[1].certificate_id)


async def test_cli_lists_pending_and_parked(bench: Bench, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    a, b, c = await bench.issue(3)
    journal = bench.store.path
    # Nothing was sent yet: all pending.
    items = read_outbox(journal)
    assert len(items) == 3 and outbox_counts(journal)["pending"] == 3
    outbox = await Outbox(bench.store).open()
    await outbox.mark_delivered(a.certificate_id, {"status": 201})
    await outbox.mark_parked(b.certificate_id, "HTTP 422: invalid_certificate: bad_signature")
    state_dir = str(journal.parent)
    assert cmd_outbox(parse(["outbox", "--state-dir", state_dir])) == 0
    out = capsys.readouterr().out
    assert a.certificate_id not in out
    assert f"parked    {b.certificate_id}" in out and "PARKED: HTTP 422" in out
    assert f"pending   {c.certificate_id}" in out
    assert "1 parked" in out
    assert cmd_outbox(parse(["outbox", "--state-dir", state_dir, "--json", "--all"])) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {d["state"] for d in listed} == {"delivered", "parked", "pending"}
    assert outbox_counts(journal) == {"pending": 1, "parked": 1, "delivered": 1}


async def test_cli_retry_moves_parked_back(bench: Bench, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    (a,) = await bench.issue(1)
    outbox = await Outbox(bench.store).open()
    await outbox.mark_parked(a.certificate_id, "HTTP 400")
    # The CLI opens the journal itself, as it would beside a running agent.
    state_dir = str(bench.store.path.parent)
    import asyncio

    code = await asyncio.to_thread(cmd_outbox, parse(["outbox", "requeue", "--all",
                                                      "--state-dir", state_dir]))
    assert code == 0 and "1 certificate(s) re-queued" in capsys.readouterr().out
    assert (await outbox.counts()).parked == 0


def test_cli_without_journal_is_a_clear_error(tmp_path: Path) -> None:
    from wipeagent.errors import StoreError

    with pytest.raises(StoreError, match="no journal"):
        cmd_outbox(parse(["outbox", "--state-dir", str(tmp_path)]))
