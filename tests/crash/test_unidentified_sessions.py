"""Sessions the agent left before identifying their phone are ended, on their slot only."""

from __future__ import annotations

from pathlib import Path

from wipeagent.store import Store


async def test_only_unfinished_unidentified_sessions_of_the_slot(tmp_path: Path) -> None:
    async with Store(tmp_path / "journal.sqlite3") as store:
        await store.create_session("orphan", "slot-a")
        await store.create_session("identified", "slot-a")
        await store.journal("identified", "identify", {}, serial="S1")
        await store.create_session("ended", "slot-a")
        await store.journal("ended", "ended", {}, state="done")
        await store.create_session("other-slot", "slot-b")
        await store.create_session("current", "slot-a")
        rows = await store.unidentified_sessions("slot-a", exclude="current")
        assert [r.id for r in rows] == ["orphan"]
