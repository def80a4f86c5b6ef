"""Unit tier: durations, options, backoff, payload typing. No database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pydantic
import pytest

from tenure import Backoff, ConfigError, PayloadInvalid, Registry
from tenure._durations import as_timedelta, parse_duration
from tenure._store.worker_rows import Claimed
from tenure._worker.config import WorkerConfig
from tenure._worker.executor import execute
from tenure._worker.metrics import DURATION_BUCKETS, Histogram
from tenure._worker.state import Held, Holdings
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("500ms", 0.5), ("1m30s", 90), ("2h", 7200), ("1.5", 1.5), ("1d", 86400)],
)
def test_parse_duration_accepts_the_cli_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "15x", "s15", "1m 30s", "-"])
def test_malformed_duration_is_one_line_error_naming_the_field(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(text, field="lease")
    message = str(err.value)
    assert message.startswith("lease:") and "\n" not in message


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ConfigError, match="delay: must not be negative"):
        as_timedelta(-1, field="delay")


def test_backoff_grows_exponentially_up_to_its_cap() -> None:
    b = Backoff(base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0.0)
    assert [b.delay(n).total_seconds() for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


def test_backoff_jitter_stays_within_its_band() -> None:
    b = Backoff(base=timedelta(seconds=4), jitter=0.25)
    delays = {b.delay(1).total_seconds() for _ in range(200)}
    assert min(delays) >= 3.0 and max(delays) <= 5.0 and len(delays) > 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": -3}, "concurrency"),
        ({"lease": timedelta(milliseconds=10)}, "lease"),
        ({"queues": ()}, "queues"),
        ({"heartbeat": timedelta(seconds=20)}, "heartbeat"),
    ],
)
def test_worker_config_rejects_out_of_range_values(kwargs: dict, field: str) -> None:
    args = {"queues": ("default",), **kwargs}
    with pytest.raises(ConfigError, match=f"^{field}:"):
        WorkerConfig(**args)


def test_heartbeat_defaults_to_a_third_of_the_lease() -> None:
    assert WorkerConfig(queues=("q",), lease=timedelta(seconds=15)).heartbeat_interval == timedelta(
        seconds=5
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": "abc"}, "timeout"),
        ({"lease": 0.1}, "lease"),
    ],
)
def test_task_options_are_validated_at_registration(kwargs: dict, field: str) -> None:
    reg = Registry("postgresql://unused", schema="unused")
    with pytest.raises(ConfigError, match=f"^{field}:"):
        reg.task(**kwargs)(lambda payload: None)


class Doc(pydantic.BaseModel):
    uri: str
    pages: int


def test_payload_type_comes_from_the_type_hint_and_errors_name_the_field() -> None:
    reg = Registry("postgresql://unused", schema="unused")

    @reg.task
    def parse(payload: Doc) -> None: ...

    assert parse.validate({"uri": "a", "pages": "3"}) == Doc(uri="a", pages=3)
    with pytest.raises(PayloadInvalid) as err:
        parse.encode({"uri": "a", "pages": "many"})
    assert "pages" in str(err.value) and "\n" not in str(err.value)


class Stamped(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)
    at: datetime
    ref: UUID
    tags: set[str]


def test_a_stored_payload_decodes_as_json_even_for_strict_types() -> None:
    """What ``send`` stored is JSON text; the worker parses it in JSON mode, where a
    strict model still takes an ISO timestamp, a UUID string and a list for a set."""
    reg = Registry("postgresql://unused", schema="unused")

    @reg.task
    def stamp(payload: Stamped) -> None: ...

    value = Stamped(at=datetime(2026, 11, 28, 12, tzinfo=UTC), ref=uuid4(), tags={"a", "b"})
    assert stamp.decode(stamp.encode(value)) == value
    with pytest.raises(PayloadInvalid, match="stamp: payload invalid: at"):
        stamp.decode(f'{{"at": "noon", "ref": "{value.ref}", "tags": []}}')


def test_dict_payloads_must_be_dicts() -> None:
    reg = Registry("postgresql://unused", schema="unused")

    @reg.task(name="d")
    def d(payload: dict) -> None: ...

    assert d.encode({"a": 1}) == '{"a":1}'
    with pytest.raises(PayloadInvalid, match="d: payload invalid"):
        d.encode(["not", "a", "dict"])


def test_a_task_takes_exactly_one_payload_parameter() -> None:
    reg = Registry("postgresql://unused", schema="unused")
    with pytest.raises(ConfigError, match="exactly one parameter"):
        reg.task(lambda a, b: None)


def test_schema_names_must_be_plain_identifiers() -> None:
    with pytest.raises(ConfigError, match="schema:"):
        Registry("postgresql://unused", schema='x"; drop table y; --')


def _held(task_id: int, attempt: int = 1) -> Held:
    row = Claimed(task_id, "t", "q", "{}", attempt, 0, 0)
    return Held(row, TaskContext(task_id, attempt, "t", "q"))


def test_holdings_counts_follow_claim_start_outcome_and_loss() -> None:
    # Given three claimed attempts, two of them started
    h = Holdings()
    a, b, c = _held(1), _held(2), _held(3)
    for held in (a, b, c):
        h.claimed(held)
    h.started(a)
    h.started(b)
    h.started(b)  # starting twice counts once
    assert (h.running(), h.waiting_or_running()) == (2, 3)
    # When one outcome is known, twice, and a waiting one is lost
    h.outcome_known(a)
    h.outcome_known(a)
    assert h.lose(3, 1) is c
    # Then only the other running attempt still counts
    assert (h.running(), h.waiting_or_running()) == (1, 1)
    # And writing the known outcome changes nothing more
    assert h.settled(1, 1) is a
    assert (h.running(), h.waiting_or_running()) == (1, 1)
    # And a new attempt of a held task replaces the old one
    h.claimed(_held(2, attempt=2))
    assert (h.running(), h.waiting_or_running()) == (0, 1)
    assert h.settled(2, 1) is None and h.snapshot() == {2: 2}
    # And an attempt lost while it may still run is kept apart until its row is expired
    h.claimed(_held(4))
    assert h.lose(4, 1, surrender=True) is not None and h.surrendered() == {4}
    h.keep_surrendered([])
    assert h.surrendered() == frozenset()


def test_task_context_events_reflect_marks_made_before_and_after_first_use() -> None:
    # Given one context marked before anyone asked for its events
    early = TaskContext(1, 1, "t", "q")
    early.mark_lost()
    # Then the events it hands out later are already set
    assert early.lease_lost.is_set() and early.stop.is_set()
    assert not early.cancelled.is_set()
    # And a context whose event a task holds sees a later mark
    late = TaskContext(2, 1, "t", "q")
    stop = late.stop
    assert not stop.is_set()
    late.mark_cancelled()
    assert stop.is_set() and late.cancelled.is_set() and late.stop is stop
    assert not late.lease_lost.is_set()


def test_a_timeout_error_raised_by_a_task_without_a_timeout_is_an_ordinary_error() -> None:
    # Given an async task with no timeout whose own code raises TimeoutError
    reg = Registry(schema="units")

    @reg.task(name="calls_out")
    async def calls_out(payload: dict) -> None:
        raise TimeoutError("the remote service did not answer")

    row = Claimed(1, "calls_out", "default", "{}", 1, 0, 0)
    pool = DaemonThreadPool(1)
    # When the worker runs it
    outcome = asyncio.run(execute(calls_out, row, TaskContext(1, 1, "calls_out", "default"), pool))
    pool.shutdown(wait=False)
    # Then it is recorded as the error it is, with its traceback, and retried
    assert outcome.outcome == "error"
    assert outcome.error is not None and "the remote service did not answer" in outcome.error
    assert outcome.delay > 0


def test_duration_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram()
    for seconds in (0.001, 0.005, 0.02, 0.2, 61.0):
        h.observe(seconds)
    buckets = dict(zip(DURATION_BUCKETS, h.cumulative(), strict=True))
    # a run equal to a bound counts under it (Prometheus "le"); one past the last bound
    # counts only in +Inf, which is the total
    assert buckets[0.005] == 2
    assert buckets[0.01] == 2 and buckets[0.025] == 3
    assert buckets[0.25] == 4 and buckets[60.0] == 4
    assert h.n == 5 and h.total == pytest.approx(61.226)
