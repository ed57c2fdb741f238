import pytest

from agent.wire.codes import (
    ACTIONS,
    CATALOGUE,
    Category,
    ReversalOutcome,
    lookup,
    reversal_outcome,
)

# DESIGN.md section 4: the categories and the codes it names for each.
DESIGN_CATEGORIES = {
    Category.APPROVED: ["00", "10", "11", "A2", "A4", "A5", "A6"],
    Category.DECLINE: ["01", "04", "05", "14", "41", "43", "45", "51", "54", "55", "57", "61",
                       "62", "65", "75"],
    Category.RETRY_LATER: ["68", "90", "91", "92", "96", "98"],
    Category.TERMINAL_CONFIG: ["03", "58", "97", "C1"],
    Category.SESSION: ["77"],
    Category.SECURITY: ["A0", "A7", "99"],
    Category.FORMAT: ["30"],
    Category.DUPLICATE: ["94"],
}  # fmt: skip


def test_retry_later_is_exactly_the_design_list() -> None:
    retry = sorted(c for c, rc in CATALOGUE.items() if rc.category is Category.RETRY_LATER)
    assert retry == DESIGN_CATEGORIES[Category.RETRY_LATER]


def test_77_is_a_session_matter_not_a_plain_sign_in() -> None:
    rc = lookup("77")
    assert "签到" in rc.zh and "batch" in rc.en
    assert "batch" in rc.action_en and "批次号" in rc.action_zh


@pytest.mark.parametrize(
    ("code", "outcome"),
    [("00", ReversalOutcome.CONFIRMED), ("A4", ReversalOutcome.CONFIRMED),
     ("12", ReversalOutcome.NOTHING_TO_REVERSE), ("25", ReversalOutcome.NOTHING_TO_REVERSE),
     ("22", ReversalOutcome.CONFLICT), ("96", ReversalOutcome.NOT_DONE),
     ("97", ReversalOutcome.NOT_DONE), ("A0", ReversalOutcome.NOT_DONE),
     ("Q7", ReversalOutcome.NOT_DONE), ("", ReversalOutcome.NOT_DONE)],
)  # fmt: skip
def test_reversal_outcomes(code: str, outcome: ReversalOutcome) -> None:
    assert reversal_outcome(code) is outcome


@pytest.mark.parametrize(
    ("code", "category"),
    [(code, category) for category, codes in DESIGN_CATEGORIES.items() for code in codes],
)
def test_design_codes_have_their_category(code: str, category: Category) -> None:
    assert lookup(code).category is category


def test_97_is_terminal_not_registered() -> None:
    rc = lookup("97")
    assert rc.category is Category.TERMINAL_CONFIG
    assert "未登记" in rc.zh
    assert "not registered" in rc.en
    assert "self-check" in rc.action_en


def test_every_entry_is_bilingual_with_an_action() -> None:
    for code, rc in CATALOGUE.items():
        assert rc.code == code and len(code) == 2
        assert rc.zh and rc.en and rc.known
        assert any("\u4e00" <= ch <= "\u9fff" for ch in rc.zh), code
        assert rc.action_en and rc.action_zh
    assert set(ACTIONS) == set(Category)


def test_unknown_code_is_reported_as_unknown() -> None:
    rc = lookup("Q7")
    assert rc.category is Category.UNKNOWN and not rc.known
    assert rc.code == "Q7"
    assert lookup("a0").code == "A0"


@pytest.mark.parametrize("bad", ["", "9", "970", "9\n", "中文"])
def test_not_a_code(bad: str) -> None:
    with pytest.raises(ValueError, match="2 characters"):
        lookup(bad)
