"""The journal's timeline (`agent journal`) in both languages, from the message catalogue."""

from agent import timeline
from agent.journal import Journal
from agent.wire.message import Message


def test_each_entry_is_in_both_languages_and_render_picks_one(tmp_path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.event("recovery.refused", code="97", text="terminal not registered")
    journal.event("recovery.plan", remedies=["sign-in", "provision"], refused_by="")
    request = Message("0200", {3: "000000", 4: "000000001000", 11: "000001", 41: "10000001"})
    row = journal.begin(request, financial=True)
    journal.finish(row, "completed", Message("0210", {11: "000001", 39: "00"}))
    entries = timeline.entries(journal)
    journal.close()
    by_kind = {entry["kind"]: entry for entry in entries}
    refused, plan = by_kind["recovery.refused"], by_kind["recovery.plan"]
    assert refused["text"].startswith("host refused: 97 (") and "终端" in refused["text_zh"]
    assert refused["text_zh"].startswith("主机拒绝：97（")
    assert plan["text_zh"] == "修复计划：sign-in, then provision"
    assert by_kind["transaction"]["text_zh"].startswith(
        "0200 流水号 000001 10.00 CNY：completed，00（"
    )
    assert "主机拒绝" in timeline.render(entries, "zh")
    assert "host refused" in timeline.render(entries) and "主机" not in timeline.render(entries)


def test_a_local_answer_shows_its_finding_and_one_of_an_older_release_none(tmp_path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.event("local-answer", mti="0200", code="98", finding="host.no-answer", reason="late")
    journal.event("local-answer", mti="0200", code="96", reason="no host reachable")
    texts = [e["text"] for e in timeline.entries(journal) if e["kind"] == "local-answer"]
    journal.close()
    assert texts == [
        "answered 0200 locally with 98 (host.no-answer): late",
        "answered 0200 locally with 96: no host reachable",
    ]


def test_only_the_newest_entries_when_asked_and_how_many_were_left_out(tmp_path) -> None:
    """The control socket answers in one line: a busy terminal's whole journal would not fit
    the technician's read, nor the agent's memory."""
    now = [1_000.0]
    journal = Journal(tmp_path / "journal.sqlite3", clock=lambda: now[0])
    for n in range(6):
        now[0] += 1
        journal.event("recovery.refused", code="97", text=f"refusal {n}")
        now[0] += 1
        request = Message("0200", {3: "000000", 4: "000000001000", 11: f"{n + 1:06d}"})
        journal.begin(request, financial=True)
    newest = timeline.entries(journal, 0.0, 3)
    oldest = timeline.entries(journal, 1_003.0, 3, newest=False)
    assert [entry["at"] for entry in oldest] == [1_003.0, 1_004.0, 1_005.0]
    assert [entry["at"] for entry in newest] == [1_010.0, 1_011.0, 1_012.0]
    assert [entry["kind"] for entry in newest] == ["transaction", "recovery.refused",
                                                   "transaction"]  # fmt: skip
    assert journal.count_since(0.0) == 12 and journal.count_since(1_011.0) == 2
    assert len(timeline.entries(journal)) == 12
    journal.close()
