"""Schedules: a task sent on a cron expression or a fixed interval, once per tick.

Rules:
- A schedule is declared beside its task (``reg.schedule(...)``) and checked then,
  whole: the cron expression (five fields, or six with seconds first, parsed by
  ``cronsim``), the IANA timezone, the task (registered in this registry) and the
  payload (the task's own validation and size limits). What is wrong raises
  :class:`~tenure.errors.ConfigError` (or the task's ``PayloadInvalid``) in one line,
  before anything is written.
- Ticks are instants. A cron schedule's ticks follow its timezone the way Debian's
  cron does: a job at a fixed time that falls in the hour skipped in spring fires once,
  right after the gap; one in the hour repeated in autumn fires once, the first time;
  a job with a wildcard hour or minute fires on real time (every ten minutes stays ten
  minutes apart). A fixed interval's ticks are the multiples of it since the Unix
  epoch, so every worker agrees on them without talking.
  (``cronsim`` assumes DST shifts of an hour: in a zone whose clocks move by half an
  hour, Australia/Lord_Howe, a cron schedule can miss the ticks of that half hour;
  give such a schedule ``timezone="UTC"``.) A fixed interval's ticks do not depend on
  a timezone, so one is refused with ``every=``.
- The first tick of a schedule just added, changed or resumed is the first after that
  moment (the row's ``updated_at``), not after the first look, so a tick due in
  between is not skipped. ``jitter`` must be shorter than the gap between ticks.
- After downtime, the catch-up policy decides what is sent for the ticks that passed:
  ``latest`` sends only the most recent and counts the others missed; ``all`` sends
  each, up to ``max_catch_up`` (the most recent ones), and counts the rest missed.
- This module computes ticks and what to send; the database decides that each tick
  is sent once (``schedule_fire``), and the worker's scheduler asks it
  (:mod:`tenure._worker.scheduler`).

>>> reg.schedule(nightly_backfill, cron="0 2 * * *", timezone="Europe/Paris")
...                                                        # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from tenure._durations import as_timedelta
from tenure.errors import ConfigError
from tenure.options import TaskOptions

CATCH_UP = ("latest", "all")
DEFAULT_MAX_CATCH_UP = 100
MAX_CATCH_UP = 1_000  # ticks one statement sends at most (it runs on the heartbeat's link)
MIN_EVERY = timedelta(seconds=1)
MAX_NAME = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Counting the ticks of a long outage stops here (planning runs on the worker's event
# loop: about 40 ms for this many); the count of missed ticks then says "at least".
COUNT_CAP = 10_000
GAP_SAMPLE = 50  # the ticks looked at to find a cron expression's shortest gap


class ScheduledTask(Protocol):
    """What a schedule needs of its task (a :class:`tenure.Task`)."""

    options: TaskOptions

    def encode(self, payload: Any, *, label: str = ...) -> str: ...


@dataclass(frozen=True)
class When:
    """When a schedule ticks: a cron expression in a timezone, or a fixed interval."""

    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"

    @classmethod
    def build(cls, cron: str | None, every: Any, timezone: str, where: str) -> When:
        if (cron is None) == (every is None):
            raise ConfigError(
                f"{where}: give a cron expression (cron=, --cron) or an interval (every=, "
                "--every), not both and not neither"
            )
        zone = _zone(timezone, where)
        if cron is not None:
            if not isinstance(cron, str) or not cron.strip():
                raise ConfigError(f"{where}: cron must be a cron expression like '*/10 * * * *'")
            cron = " ".join(cron.split())
            try:
                CronSim(cron, datetime.now(zone))
            except (CronSimError, ValueError) as exc:
                fields = len(cron.split())
                hint = (
                    "five fields (minute hour day month weekday), or six with seconds first"
                    if fields not in (5, 6)
                    else f"{exc}"
                )
                raise ConfigError(f"{where}: invalid cron expression {cron!r}: {hint}") from None
            return cls(cron=cron, timezone=timezone)
        period = as_timedelta(every, field=f"{where}: every")
        assert period is not None
        if period < MIN_EVERY or period.microseconds:
            raise ConfigError(f"{where}: every must be a whole number of seconds, at least 1 s")
        if timezone != "UTC":
            raise ConfigError(
                f"{where}: timezone applies to cron schedules; every= ticks are multiples of "
                "the interval since the epoch, the same in every zone (drop timezone=)"
            )
        return cls(every=period, timezone=timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def after(self, moment: datetime) -> Iterator[datetime]:
        """The ticks strictly after ``moment``, in UTC, in order, without end."""
        if self.every is not None:
            step = _micros(self.every)
            k = _micros(moment - EPOCH) // step + 1
            while True:
                yield EPOCH + timedelta(microseconds=k * step)
                k += 1
        assert self.cron is not None
        last = moment
        for local in CronSim(self.cron, moment.astimezone(self.zone)):
            tick = local.astimezone(UTC)
            # in an hour that repeats, a fixed-time job's local clock starts over:
            # what it gives at or before the last tick has fired already
            if tick > last:
                last = tick
                yield tick

    def shortest_gap(self) -> timedelta:
        """The shortest time between two ticks (of the next few, for a cron expression)."""
        if self.every is not None:
            return self.every
        sample = list(islice(self.after(datetime.now(UTC)), GAP_SAMPLE))
        gaps = [b - a for a, b in zip(sample, sample[1:], strict=False)]
        return min(gaps, default=timedelta(days=365 * 50))

    def describe(self) -> str:
        if self.every is not None:
            return f"every {_human(self.every)}"
        assert self.cron is not None
        zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
        return f"cron {self.cron}{zone}"


@dataclass(frozen=True)
class Plan:
    """What one look at a due schedule sends, and when it fires next."""

    ticks: list[datetime]  # to send, oldest first
    missed: int  # due ticks the policy does not send
    next_tick: datetime
    fire_at: datetime  # next_tick plus its jitter
    missed_at_least: bool = False  # counting stopped at COUNT_CAP


def plan(
    when: When,
    *,
    next_tick: datetime | None,
    last_tick: datetime | None,
    now: datetime,
    catch_up: str,
    max_catch_up: int,
    jitter: timedelta,
    changed_at: datetime | None = None,
    rng: random.Random | None = None,
) -> Plan:
    """The ticks due at ``now`` (the database's clock) from ``next_tick`` on.

    Without a ``next_tick`` (a schedule just added, changed or resumed, at
    ``changed_at``) nothing is sent yet: the first tick is the first after that moment
    and after the last one fired (already due, it is sent at the next look)."""
    if next_tick is None:
        start = max(t for t in (changed_at, last_tick, None if changed_at else now) if t)
        upcoming = next(when.after(start))
        return Plan([], 0, upcoming, _jittered(upcoming, jitter, rng))
    keep = 1 if catch_up == "latest" else max_catch_up
    due: deque[datetime] = deque(maxlen=keep)
    count = 0
    upcoming = next_tick
    if next_tick <= now:
        due.append(next_tick)
        count = 1
        for tick in when.after(next_tick):
            if tick > now:
                upcoming = tick
                break
            due.append(tick)
            count += 1
            if count >= COUNT_CAP:
                # an outage of more ticks than is worth counting: keep the latest
                # ones, found going back from now, and say the count is a floor
                recent = _before(when, now, keep)
                upcoming = next(when.after(now))
                return Plan(recent, count - len(recent), upcoming,
                            _jittered(upcoming, jitter, rng), missed_at_least=True)  # fmt: skip
    return Plan(list(due), count - len(due), upcoming, _jittered(upcoming, jitter, rng))


@dataclass(frozen=True)
class Schedule:
    """A schedule as declared: its task, when it ticks, what it sends, its policies."""

    name: str
    task_name: str
    queue: str
    when: When
    payload_json: str
    catch_up: str = "latest"
    max_catch_up: int = DEFAULT_MAX_CATCH_UP
    jitter: timedelta = timedelta(0)
    overlap: bool = True

    @classmethod
    def build(
        cls,
        task: ScheduledTask,
        *,
        name: str | None = None,
        cron: str | None = None,
        every: Any = None,
        timezone: str = "UTC",
        payload: Any = None,
        catch_up: str = "latest",
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
        jitter: Any = None,
        overlap: bool = True,
    ) -> Schedule:
        """The schedule of ``task``, checked whole (see ``Registry.schedule``)."""
        label = name if name is not None else task.options.name
        where = f"schedule {label!r}"
        if (
            not isinstance(label, str)
            or not label.strip()
            or len(label) > MAX_NAME
            or any(ord(c) < 32 or ord(c) == 127 for c in label)
        ):
            raise ConfigError(f"schedule name: must be 1 to {MAX_NAME} printable characters")
        when = When.build(cron, every, timezone, where)
        if catch_up not in CATCH_UP:
            raise ConfigError(f"{where}: catch_up must be one of {', '.join(CATCH_UP)}")
        if isinstance(max_catch_up, bool) or not isinstance(max_catch_up, int):
            raise ConfigError(f"{where}: max_catch_up must be a whole number")
        if not 1 <= max_catch_up <= MAX_CATCH_UP:
            raise ConfigError(f"{where}: max_catch_up must be from 1 to {MAX_CATCH_UP}")
        spread = as_timedelta(jitter, field=f"{where}: jitter") or timedelta(0)
        if spread and spread >= when.shortest_gap():
            raise ConfigError(
                f"{where}: jitter must be shorter than the {_human(when.shortest_gap())} "
                "between ticks (a tick jittered past the next one would count it missed)"
            )
        if not isinstance(overlap, bool):
            raise ConfigError(f"{where}: overlap must be True or False")
        encoded = task.encode(payload, label=f"{where} payload")
        return cls(
            name=label,
            task_name=task.options.name,
            queue=task.options.queue,
            when=when,
            payload_json=encoded,
            catch_up=catch_up,
            max_catch_up=max_catch_up,
            jitter=spread,
            overlap=overlap,
        )


def _zone(name: str, where: str) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: timezone must be an IANA name like 'Europe/Paris'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown timezone {name!r}; use an IANA name like 'Europe/Paris' or 'UTC'"
        ) from None


def _before(when: When, now: datetime, keep: int) -> list[datetime]:
    """The last ``keep`` ticks at or before ``now``, oldest first."""
    if when.every is not None:
        step = _micros(when.every)
        k = _micros(now - EPOCH) // step
        return [EPOCH + timedelta(microseconds=(k - i) * step) for i in reversed(range(keep))]
    assert when.cron is not None
    found: list[datetime] = []
    start = (now + timedelta(seconds=1)).astimezone(when.zone)
    for local in CronSim(when.cron, start, reverse=True):
        tick = local.astimezone(UTC)
        if tick <= now and (not found or tick < found[-1]):
            found.append(tick)
        if len(found) == keep:
            break
    return list(reversed(found))


def _jittered(tick: datetime, jitter: timedelta, rng: random.Random | None) -> datetime:
    if not jitter:
        return tick
    return tick + jitter * (rng or random).random()


def _micros(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds


def _human(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
