"""The vocabularies of how attempts end are written once, in tenure.states, and agree
with the SQL that writes the same words (no database: the SQL is read as text)."""

from __future__ import annotations

import re

from tenure.states import (
    EVENT_MEANINGS,
    RECORDED_AS,
    RECORDED_EVENTS,
    VERDICT_EVENTS,
    Event,
    Recorded,
    Reported,
    Verdict,
    recorded_event,
)
from tests.conftest import ROOT

SCHEMA_SQL = (ROOT / "src" / "tenure" / "_db" / "schema.sql").read_text()
OUTCOMES_SQL = (ROOT / "src" / "tenure" / "_db" / "functions" / "50_outcomes.sql").read_text()


def words(text: str) -> set[str]:
    return set(re.findall(r"'([a-z_]+)'", text))


def test_the_attempts_table_keeps_exactly_the_recorded_outcomes() -> None:
    check = re.search(r"outcome\s+text NOT NULL CHECK \(outcome IN \(([^)]*)\)\)", SCHEMA_SQL)
    assert check is not None
    assert words(check.group(1)) == {str(r) for r in Recorded}


def test_complete_returns_exactly_the_verdicts_and_records_as_mapped() -> None:
    case = re.search(r"CASE\s+WHEN i\.outcome = 'succeeded'.*?END AS verdict", OUTCOMES_SQL, re.S)
    assert case is not None
    then = set(re.findall(r"THEN '([a-z_]+)'|ELSE '([a-z_]+)'", case.group(0)))
    assert {w for pair in then for w in pair if w} == {str(v) for v in Verdict} - {"recorded"}
    # What complete() writes into attempts: discarded as an error, the rest as they are
    assert "CASE WHEN o.outcome = 'discarded' THEN 'error' ELSE o.outcome END" in OUTCOMES_SQL
    for reported in Reported:
        expected = "error" if reported is Reported.DISCARDED else str(reported)
        assert RECORDED_AS[reported] == expected


def test_every_word_has_its_event_and_every_event_its_meaning() -> None:
    assert set(VERDICT_EVENTS) == set(Verdict)
    assert set(RECORDED_EVENTS) == set(Recorded)
    assert set(EVENT_MEANINGS) == set(Event)
    assert recorded_event(None) is None and recorded_event("error") == "task_retried"
    assert recorded_event("from_a_newer_release") == "from_a_newer_release"


def test_every_event_the_readme_names_is_one_of_tenures() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[
        readme.index("- **Logs**") : readme.index("- **", readme.index("- **Logs**") + 5)
    ]
    fields = {"task_id", "task_name", "worker_id"}  # key=value fields, not events
    named = set(re.findall(r"`((?:task|tasks|lease|worker)_[a-z_]+)`", section)) - fields
    assert named and named <= {str(e) for e in Event}, named - {str(e) for e in Event}
