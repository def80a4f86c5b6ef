"""Fuzz: generated payloads, results and errors through a real worker on a real
database. Every task ends, and every ordinary task sent beside them succeeds on its
first attempt; a payload is either refused at ``send`` with :class:`PayloadInvalid`
(nothing stored) or runs and succeeds.

``make test`` tries a bounded number of examples (``TENURE_FUZZ_EXAMPLES``, 100 by
default, fixed seed); ``make fuzz`` tries many more with a random seed and prints
what it tried and found.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tenure import PayloadInvalid
from tests.test_outcomes import APP, all_finished

EXAMPLES = int(os.environ.get("TENURE_FUZZ_EXAMPLES", "100"))
RANDOM = os.environ.get("TENURE_FUZZ_RANDOM") == "1"

# Code points of every kind: ASCII, controls, NUL, lone surrogates, astral.
code_points = st.one_of(
    st.integers(0x20, 0x7E),
    st.sampled_from([0, 0x1B, 0x7F, 0x85, 0xD800, 0xDCFF, 0xDFFF, 0xFFFE, 0x10FFFF]),
    st.integers(0, 0x10FFFF),
)
texts = st.lists(code_points, max_size=12).map(lambda cps: {"s": cps})
floats = st.sampled_from(["nan", "inf", "-inf", "1e308", "-0.0", "1.5"]).map(lambda f: {"f": f})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), texts, floats)
odd = st.one_of(
    st.sampled_from(["object", "set", "bytes", "complex", "unprintable"]).map(lambda o: {"odd": o}),
    st.sampled_from([0, 1_000, 11 * 1024 * 1024]).map(lambda n: {"big": n}),
    st.sampled_from([1, 60, 129, 300]).map(lambda n: {"deep": n}),
)
recipes = st.recursive(
    st.one_of(scalars, odd),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: {"list": xs}),
        st.lists(st.tuples(texts, inner), max_size=4).map(lambda kv: {"dict": kv}),
    ),
    max_leaves=12,
)
actions = st.sampled_from(["return", "raise", "discard", "retry"])

# Payload values as a sender would pass them (built here, in the sending process).
payload_strings = st.lists(code_points, max_size=8).map(lambda cps: "".join(map(chr, cps)))
payload_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63),
        st.floats(allow_nan=True, allow_infinity=True),
        payload_strings,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(payload_strings, inner, max_size=4)
    ),
    max_leaves=16,
)


REFUSALS = {
    "NaN or infinite": "NaN/inf",
    "NUL character": "NUL",
    "nested more than": "too deep",
    "too large": "too large",
    "is not valid UTF-8": "not UTF-8",
}


def refusal(message: str) -> str:
    """Which limit a PayloadInvalid names (a message naming none fails the test)."""
    for words, kind in REFUSALS.items():
        if words in message:
            return kind
    raise AssertionError(f"a refusal that names no limit: {message}")


def warnings(log: str) -> list[str]:
    """The worker's warnings and errors, but the refusals it is meant to log."""
    skip = ("task_ended",)
    lines = [x for x in log.splitlines() if (" WARNING " in x or " ERROR " in x)]
    return [x[:300] for x in lines if not any(s in x for s in skip)][:20]


def deep(n: int) -> Any:
    value: Any = 0
    for _ in range(n):
        value = [value]
    return value


def fuzz_settings(test: Any) -> Any:
    test = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(test)
    return test if RANDOM else seed(20261202)(test)


@pytest.mark.acceptance
def test_generated_results_and_errors_always_land(
    hostile: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    tried: Counter[str] = Counter()
    fuzzed: list[int] = []
    ordinary: list[int] = []

    @fuzz_settings
    @given(recipe=recipes, action=actions)
    def send(recipe: Any, action: str) -> None:
        # The recipe is JSON made of JSON: send never refuses it.
        fuzzed.append(hostile.fuzzed.send({"recipe": recipe, "action": action}).id)
        ordinary.append(hostile.ordinary.send({"i": len(ordinary)}).id)
        tried[action] += 1

    send()
    # Every kind of awkward value is among them, whatever the examples drew.
    for recipe in ({"s": [0xDCFF]}, {"s": [0]}, {"f": "nan"}, {"big": 11 * 1024 * 1024}):
        for action in ("return", "raise"):
            fuzzed.append(hostile.fuzzed.send({"recipe": recipe, "action": action}).id)
    fuzzed.append(hostile.fuzzed.send({"recipe": {"odd": "unprintable"}, "action": "raise"}).id)
    fuzzed.append(hostile.fuzzed.send({"recipe": {"deep": 300}, "action": "return"}).id)
    # A lease a loaded machine keeps: encoding megabytes holds the GIL, and a worker
    # starved past its lease fences itself (by design), which this test is not about.
    w = workers("--lease", "15s", app=APP)
    done = all_finished(db, [*ordinary, *fuzzed], timeout=60 + len(fuzzed) / 5)
    late = [(t, done[t]) for t in ordinary if done[t][:4] != ("succeeded", 1, 0, 0)]
    assert not late, (late[:3], warnings(w.log()))
    ends = Counter(done[t][0] for t in fuzzed)
    assert set(ends) <= {"succeeded", "failed"}, ends
    assert all(done[t][3] == 0 for t in fuzzed), "no fuzzed task crashed its worker"
    assert w.alive()
    log = w.log()
    assert "outcome_dropped" not in log
    print(f"\nfuzz results/errors: {len(fuzzed)} tasks ({dict(tried)}), ended {dict(ends)}")


@pytest.mark.acceptance
def test_generated_payloads_are_refused_at_send_or_run(
    hostile: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    verdicts: Counter[str] = Counter()
    accepted: list[int] = []
    hostile.ordinary.send({"i": 0})  # the schema exists before anything is counted

    def count() -> int:
        row = db.execute("SELECT count(*) FROM tasks").fetchone()
        return int(row[0]) if row else 0

    @fuzz_settings
    @given(payload=st.one_of(payload_values, st.sampled_from([deep(63), deep(65), deep(200)])))
    def send(payload: Any) -> None:
        before = count()
        try:
            accepted.append(hostile.echo.send(payload).id)
        except PayloadInvalid as exc:
            assert count() == before, "a refused payload stored nothing"
            verdicts[refusal(str(exc))] += 1
            return
        verdicts["accepted"] += 1

    send()
    workers("--lease", "15s", app=APP)
    done = all_finished(db, accepted, timeout=60 + len(accepted) / 5)
    # What send accepted, the worker reads back and runs, first time.
    assert all(done[t][:4] == ("succeeded", 1, 0, 0) for t in accepted), [
        (t, done[t]) for t in accepted if done[t][0] != "succeeded"
    ][:3]
    print(f"\nfuzz payloads: {sum(verdicts.values())} tried, {dict(verdicts)}")
