"""Unit tier: when schedules tick, across DST in real zones, and what a look after an
outage sends; bad declarations refused in one line. The clock is injected: ``plan``
takes the database's ``now``, so a simulated fleet looks at a schedule every minute
through both DST transitions of a year."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pydantic
import pytest

from tenure import ConfigError, PayloadInvalid, Registry, TaskNotFound
from tenure.errors import AlreadyRegistered
from tenure.schedules import When, plan

NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


def fleet_sends(
    when: When, start: datetime, end: datetime, *, look_every: timedelta = timedelta(minutes=1)
) -> list[datetime]:
    """The ticks a fleet that looks every ``look_every`` sends from ``start`` to ``end``."""
    first = plan(when, next_tick=None, last_tick=None, now=start, catch_up="latest",
                 max_catch_up=100, jitter=timedelta(0))  # fmt: skip
    next_tick, sent, now = first.next_tick, [], start
    while now < end:
        now += look_every
        if next_tick > now:
            continue
        p = plan(when, next_tick=next_tick, last_tick=None, now=now, catch_up="all",
                 max_catch_up=100, jitter=timedelta(0))  # fmt: skip
        assert p.missed == 0
        sent += p.ticks
        next_tick = p.next_tick
    return sent


def local(ticks: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%m-%d %H:%M %Z") for t in ticks]


def test_a_fixed_time_in_the_hour_skipped_in_spring_fires_once_right_after_the_gap() -> None:
    # Given a job at 02:30 every day in New York, where 2026-03-08 02:00 jumps to 03:00
    when = When(cron="30 2 * * *", timezone="America/New_York")
    start = datetime(2026, 3, 6, 12, 0, tzinfo=NEW_YORK)
    sent = fleet_sends(when, start, start + timedelta(days=4))
    # Then on the day of the gap it fires once, at 03:00 just after it, and on the
    # other days at 02:30
    assert local(sent, NEW_YORK) == [
        "03-07 02:30 EST",
        "03-08 03:00 EDT",
        "03-09 02:30 EDT",
        "03-10 02:30 EDT",
    ]


def test_a_fixed_time_in_the_hour_repeated_in_autumn_fires_once() -> None:
    # Given a job at 01:30 every day in New York, where 2026-11-01 01:00-02:00 repeats
    when = When(cron="30 1 * * *", timezone="America/New_York")
    start = datetime(2026, 10, 30, 12, 0, tzinfo=NEW_YORK)
    sent = fleet_sends(when, start, start + timedelta(days=4))
    # Then it fires once that day, the first time 01:30 comes
    assert local(sent, NEW_YORK) == [
        "10-31 01:30 EDT",
        "11-01 01:30 EDT",
        "11-02 01:30 EST",
        "11-03 01:30 EST",
    ]


def test_a_wildcard_hour_keeps_real_time_through_both_transitions_in_paris() -> None:
    # Given a job every 30 minutes in Paris (2026-03-29 02:00 -> 03:00; 2026-10-25
    # 03:00 -> 02:00)
    when = When(cron="*/30 * * * *", timezone="Europe/Paris")
    spring = fleet_sends(
        when, datetime(2026, 3, 29, 1, 0, tzinfo=PARIS), datetime(2026, 3, 29, 3, 40, tzinfo=PARIS)
    )
    autumn = fleet_sends(
        when,
        datetime(2026, 10, 25, 1, 50, tzinfo=PARIS),
        datetime(2026, 10, 25, 3, 5, tzinfo=PARIS),
    )
    # Then the gap has no ticks, the repeated hour has its ticks twice, and every tick
    # is 30 real minutes after the one before
    assert local(spring, PARIS) == [
        "03-29 01:30 CET", "03-29 03:00 CEST", "03-29 03:30 CEST",
    ]  # fmt: skip
    assert local(autumn, PARIS) == [
        "10-25 02:00 CEST", "10-25 02:30 CEST", "10-25 02:00 CET", "10-25 02:30 CET",
        "10-25 03:00 CET",
    ]  # fmt: skip
    for ticks in (spring, autumn):
        assert {b - a for a, b in zip(ticks, ticks[1:], strict=False)} == {timedelta(minutes=30)}


def test_a_six_field_expression_ticks_on_seconds_and_intervals_align_to_the_epoch() -> None:
    at = datetime(2026, 1, 1, 0, 0, 7, 250_000, tzinfo=UTC)
    seconds = When(cron="*/15 * * * * *")
    assert [t.second for t in seconds_after(seconds, at, 3)] == [15, 30, 45]
    # every 90 s: multiples of 90 s since 1970, whoever computes them and from when
    every = When(every=timedelta(seconds=90))
    ticks = seconds_after(every, at, 3)
    assert all(int(t.timestamp()) % 90 == 0 for t in ticks)
    assert seconds_after(every, ticks[0] - timedelta(seconds=1), 3) == ticks


def seconds_after(when: When, at: datetime, n: int) -> list[datetime]:
    found = []
    for tick in when.after(at):
        found.append(tick)
        if len(found) == n:
            return found
    raise AssertionError("ticks ended")


@pytest.mark.parametrize(
    ("catch_up", "max_catch_up", "sent", "missed"),
    [("latest", 100, 1, 9), ("all", 100, 10, 0), ("all", 3, 3, 7)],
)
def test_after_a_ten_minute_outage_each_policy_sends_what_it_says(
    catch_up: str, max_catch_up: int, sent: int, missed: int
) -> None:
    # Given a minutely schedule whose next tick was 12:01 when the whole fleet stopped
    when = When(cron="* * * * *")
    down = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    # When the first worker looks again ten minutes later
    p = plan(when, next_tick=down + timedelta(seconds=30), last_tick=down, now=down + timedelta(
        minutes=10), catch_up=catch_up, max_catch_up=max_catch_up, jitter=timedelta(0))  # fmt: skip
    # Then the ten ticks 12:01..12:10 passed: the policy sends the most recent ones
    assert len(p.ticks) == sent and p.missed == missed
    assert p.ticks[-1] == datetime(2026, 6, 1, 12, 10, tzinfo=UTC)
    assert p.ticks == sorted(p.ticks)
    assert p.next_tick == datetime(2026, 6, 1, 12, 11, tzinfo=UTC)


def test_an_outage_of_more_ticks_than_are_worth_counting_keeps_the_latest() -> None:
    # Given a schedule every second that no worker looked at for three days
    when = When(cron="* * * * * *")
    now = datetime(2026, 6, 4, 0, 0, 0, 500_000, tzinfo=UTC)
    p = plan(when, next_tick=now - timedelta(days=3), last_tick=None, now=now, catch_up="all",
             max_catch_up=5, jitter=timedelta(0))  # fmt: skip
    # Then the five most recent ticks are sent, and the missed count says it is a floor
    assert p.ticks == [now.replace(microsecond=0) - timedelta(seconds=s) for s in (4, 3, 2, 1, 0)]
    assert p.missed_at_least and p.missed > 0
    assert p.next_tick == now.replace(microsecond=0) + timedelta(seconds=1)


def test_the_first_tick_of_a_changed_schedule_is_the_first_after_the_change() -> None:
    # Given a nightly 02:00 schedule changed at 01:59:59.5, and no worker looking
    # until 02:00:00.3
    when = When(cron="0 2 * * *")
    changed = datetime(2026, 6, 1, 1, 59, 59, 500_000, tzinfo=UTC)
    look = datetime(2026, 6, 1, 2, 0, 0, 300_000, tzinfo=UTC)
    p = plan(when, next_tick=None, last_tick=None, now=look, catch_up="latest",
             max_catch_up=1, jitter=timedelta(0), changed_at=changed)  # fmt: skip
    # Then its first tick is tonight's, already due, not tomorrow's
    assert p.ticks == [] and p.next_tick == datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
    assert p.next_tick <= look
    # And the next look sends it
    sent = plan(when, next_tick=p.next_tick, last_tick=None, now=look, catch_up="latest",
                max_catch_up=1, jitter=timedelta(0))  # fmt: skip
    assert sent.ticks == [p.next_tick] and sent.missed == 0


def test_jitter_delays_when_a_tick_fires_never_the_tick_it_is() -> None:
    when = When(every=timedelta(minutes=1))
    now = datetime(2026, 6, 1, 12, 0, 10, tzinfo=UTC)
    rng = random.Random(7)
    for _ in range(50):
        p = plan(when, next_tick=None, last_tick=None, now=now, catch_up="latest",
                 max_catch_up=1, jitter=timedelta(seconds=20), rng=rng)  # fmt: skip
        assert p.next_tick == datetime(2026, 6, 1, 12, 1, tzinfo=UTC)
        assert p.next_tick <= p.fire_at <= p.next_tick + timedelta(seconds=20)


class Report(pydantic.BaseModel):
    folder: str
    depth: int = 1


@pytest.fixture
def reg() -> Registry:
    reg = Registry("postgresql://127.0.0.1:1/never", schema="never_used")

    @reg.task(name="ingest")
    def ingest(payload: Report) -> None: ...

    return reg


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"cron": "61 * * * *"}, ConfigError, "invalid cron expression '61 * * * *': Bad minute"),
        ({"cron": "* * *"}, ConfigError, "five fields (minute hour day month weekday)"),
        ({"cron": "0 2 * * *", "timezone": "Europe/Pariss"}, ConfigError,
         "unknown timezone 'Europe/Pariss'; use an IANA name"),
        ({"every": "500ms"}, ConfigError, "every must be a whole number of seconds, at least 1 s"),
        ({"cron": "* * * * *", "every": 60}, ConfigError,
         "give a cron expression (cron=, --cron) or an interval (every=, --every), not both"),
        ({}, ConfigError, "give a cron expression (cron=, --cron) or an interval"),
        ({"every": 60, "timezone": "Europe/Paris"}, ConfigError,
         "timezone applies to cron schedules"),
        ({"every": 60, "catch_up": "some"}, ConfigError, "catch_up must be one of latest, all"),
        ({"every": 60, "max_catch_up": 0}, ConfigError, "max_catch_up must be from 1 to"),
        ({"every": 60, "jitter": timedelta(seconds=-1)}, ConfigError,
         "jitter: must not be negative"),
        ({"every": 60, "jitter": 60}, ConfigError,
         "jitter must be shorter than the 1 min between ticks"),
        ({"cron": "0,5 * * * *", "jitter": "5m"}, ConfigError,
         "jitter must be shorter than the 5 min between ticks"),
        ({"every": 60, "name": "two\nlines"}, ConfigError, "1 to 200 printable characters"),
        ({"every": 60, "payload": {"folder": 3}}, PayloadInvalid, "schedule 'ingest' payload"),
        ({"every": 60, "payload": None}, PayloadInvalid, "schedule 'ingest' payload"),
    ],
)  # fmt: skip
def test_a_bad_schedule_is_refused_when_declared_in_one_line(
    reg: Registry, kwargs: dict[str, object], error: type[Exception], says: str
) -> None:
    kwargs.setdefault("payload", {"folder": "in"})
    with pytest.raises(error) as raised:
        reg.schedule("ingest", **kwargs)  # type: ignore[arg-type]
    message = str(raised.value)
    assert says in message and "\n" not in message, message
    assert reg.schedules == {}


def test_a_schedule_for_a_task_this_registry_does_not_have_is_refused(reg: Registry) -> None:
    other = Registry("postgresql://127.0.0.1:1/never", schema="never_used")

    @other.task(name="elsewhere")
    def elsewhere(payload: dict) -> None: ...

    with pytest.raises(TaskNotFound, match="no task named 'missing' is registered"):
        reg.schedule("missing", every=60, payload={})
    with pytest.raises(TaskNotFound, match="its task is not registered in this registry"):
        reg.schedule(elsewhere, every=60, payload={})
    # and a name declared twice is refused, the first kept
    reg.schedule("ingest", every=60, payload={"folder": "a"})
    with pytest.raises(AlreadyRegistered, match="schedule 'ingest' is already declared"):
        reg.schedule("ingest", every=30, payload={"folder": "b"})
    assert reg.schedules["ingest"].when.every == timedelta(seconds=60)
    assert reg.schedules["ingest"].payload_json == '{"folder":"a","depth":1}'
