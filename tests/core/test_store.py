import asyncio
from pathlib import Path

import pytest

from wipeagent.errors import StoreError
from wipeagent.store import ChainHead, NewCertificate, Store


async def test_journal_roundtrip_and_state(tmp_path: Path) -> None:
    async with Store(tmp_path / "j.sqlite3") as store:
        await store.create_session("s1", "slot-1")
        await store.journal("s1", "identify", {"serial": "ABC"}, serial="ABC")
        await store.journal("s1", "plan", {"x": 1})
        steps = await store.steps("s1")
        assert [s.step for s in steps] == ["identify", "plan"]
        assert steps[0].data == {"serial": "ABC"}
        row = await store.session("s1")
        assert row is not None and row.state == "plan" and row.serial == "ABC"
        assert (await store.open_session_for("ABC")) is not None
        await store.journal("s1", "certified", {}, state="done")
        assert (await store.open_session_for("ABC")) is None


async def test_journal_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with Store(path) as store:
        await store.create_session("s1", "slot-1")
        await store.journal("s1", "identify", {"a": 1}, serial="X")
    async with Store(path) as store:
        assert [s.step for s in await store.steps("s1")] == ["identify"]


async def test_journal_unknown_session_is_an_error(tmp_path: Path) -> None:
    async with Store(tmp_path / "j.sqlite3") as store:
        with pytest.raises(StoreError):
            await store.journal("nope", "identify", {})


def _issuer(tag: str):  # type: ignore[no-untyped-def]
    calls: list[ChainHead] = []

    def issue(head: ChainHead) -> NewCertificate:
        calls.append(head)
        return NewCertificate(f"id-{tag}", f"hash-{tag}", "erased", b"{}")

    return issue, calls


async def test_certificates_chain_and_exactly_once(tmp_path: Path) -> None:
    async with Store(tmp_path / "j.sqlite3") as store:
        for s in ("a", "b"):
            await store.create_session(s, "slot")
        issue_a, calls_a = _issuer("a")
        row_a = await store.append_certificate("a", "st", issue_a)
        assert (row_a.sequence, row_a.previous_sha256) == (1, None)
        # Issuing again for the same session returns the stored one without signing again.
        again = await store.append_certificate("a", "st", _issuer("a2")[0])
        assert again.certificate_id == "id-a"
        issue_b, calls_b = _issuer("b")
        row_b = await store.append_certificate("b", "st", issue_b)
        assert (row_b.sequence, row_b.previous_sha256) == (2, "hash-a")
        assert calls_a == [ChainHead(0, None)] and calls_b == [ChainHead(1, "hash-a")]
        assert await store.chain_head("st") == ChainHead(2, "hash-b")


async def test_concurrent_certificates_get_distinct_sequences(tmp_path: Path) -> None:
    async with Store(tmp_path / "j.sqlite3") as store:
        names = [f"s{i}" for i in range(20)]
        for n in names:
            await store.create_session(n, "slot")
        rows = await asyncio.gather(
            *(store.append_certificate(n, "st", _issuer(n)[0]) for n in names)
        )
        assert sorted(r.sequence for r in rows) == list(range(1, 21))
        by_seq = {r.sequence: r for r in rows}
        for seq in range(2, 21):
            assert by_seq[seq].previous_sha256 == by_seq[seq - 1].sha256


async def test_failed_issue_rolls_back(tmp_path: Path) -> None:
    async with Store(tmp_path / "j.sqlite3") as store:
        await store.create_session("a", "slot")

        def boom(head: ChainHead) -> NewCertificate:
            raise RuntimeError("signer failed")

        with pytest.raises(RuntimeError):
            await store.append_certificate("a", "st", boom)
        assert await store.chain_head("st") == ChainHead(0, None)
        row = await store.append_certificate("a", "st", _issuer("a")[0])
        assert row.sequence == 1
