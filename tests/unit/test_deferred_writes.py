"""Journal writes a full disk refused, kept in memory (DESIGN.md section 8: "what the agent
knows is never lost while it runs"): written in order once the journal takes them, and at the
stop written if it can, else each named in the log."""

import asyncio
import logging

from agent.journal import Journal, JournalError
from agent.transaction.deferred import DeferredWrites


def test_what_waits_is_written_in_order_and_at_the_stop_named_if_it_cannot_be(
    tmp_path, caplog
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    written: list[str] = []
    told: list[str] = []
    refusing = {"second"}

    def write(name: str):
        def step() -> None:
            if name in refusing:
                raise JournalError(f"journal write failed: {name}: disk is full")
            written.append(name)

        return step

    async def scenario() -> None:
        deferred = DeferredWrites(journal)
        deferred.add("the first", write("first"), then=lambda: told.append("first"))
        deferred.add("the second", write("second"))
        deferred.add("the third", write("third"))
        assert await deferred.flush()  # the first, then the second refused: the third waits
        assert (written, told, len(deferred)) == (["first"], ["first"], 2)
        with caplog.at_level(logging.CRITICAL, logger="agent.transaction.deferred"):
            await deferred.close()
        assert written == ["first"]  # in order: never the third before the second
        lost = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        assert lost == [
            "stopping with the second unrecorded: the journal refused it to the end",
            "stopping with the third unrecorded: the journal refused it to the end",
        ]
        refusing.clear()
        await deferred.close()  # the disk has room at the stop: written
        assert (written, len(deferred)) == (["first", "second", "third"], 0)

    try:
        asyncio.run(scenario())
    finally:
        journal.close()
