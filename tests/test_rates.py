"""Rate limits: parsing and bad input, and the claim that spends a bucket's tokens in
the statement that claims (the real statements against PostgreSQL).

The fleet-wide accuracy under four worker processes is in test_rate_fleet.py.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from typing import Any

import psycopg
import pytest

from tenure import Rate, Registry, RetryAfter
from tenure._store.worker import rates_sync_params
from tenure.errors import ConfigError
from tenure.rates import Rates, check_cost
from tests.conftest import eventually, load_app, tenure_cli
from tests.support.sql_worker import FakeWorker, expire_now, reap
from tests.test_metrics import free_port, get, sample


def publish(w: FakeWorker, reg: Registry) -> None:
    """Publish the registry's rates as a starting worker does."""
    tasks = [t.options for t in reg.tasks.values()]
    w.run("rates_sync", **rates_sync_params(tasks, list(reg.queue_options.values())))


def set_rate(db: psycopg.Connection[Any], scope: str, name: str, per_second: float,
             burst: float, kind: str = "all", key: str = "") -> None:  # fmt: skip
    """An operator's rate, as ``tenure rates set`` writes it."""
    db.execute(
        "INSERT INTO rate_limits (scope, name, kind, key, per_second, burst, source) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'operator') ON CONFLICT (scope, name, kind, key, source) "
        "DO UPDATE SET per_second = excluded.per_second, burst = excluded.burst",
        (scope, name, kind, key, per_second, burst),
    )


def keys_of(db: psycopg.Connection[Any], ids: list[int]) -> list[str]:
    rows = dict(db.execute("SELECT id, partition_key FROM tasks WHERE id = ANY(%s)", (ids,)))
    return [rows[i] for i in ids]


# -- declarations and bad input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second", "burst"),
    [("50/s", 50, 50), ("600/min", 10, 10), ("1/h", 1 / 3600, 1), ("5/10s", 0.5, 1),
     ("2.5 / second", 2.5, 2.5), ("86400/d", 1, 1)],
)  # fmt: skip
def test_a_rate_reads_as_units_per_second_with_a_second_of_burst(
    text: str, per_second: float, burst: float
) -> None:
    rate = Rate.parse(text)
    assert math.isclose(rate.per_second, per_second)
    assert rate.burst == burst


@pytest.mark.parametrize(
    ("value", "message"),
    [("fast", "must be a rate like '50/s'"), ("0/s", "more than 0"), ("-5/s", "a rate like"),
     ("5/fortnight", "a rate like"), (50, "must be a rate like"), ("5/0s", "more than 0"),
     ("2000000000/s", "at most")],
)  # fmt: skip
def test_a_rate_that_is_not_one_is_refused_in_one_line(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Rate.parse(value)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_burst_below_one_unit_or_not_a_number_is_refused() -> None:
    with pytest.raises(ConfigError, match="burst: must be at least 1"):
        Rate.parse("5/s", burst=0.5)
    with pytest.raises(ConfigError, match="burst must be a number"):
        Rate.parse("5/s", burst=float("inf"))


def test_a_cost_above_the_burst_or_not_a_whole_number_is_refused_at_declaration_and_send(
    registry: Registry, db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(ConfigError, match="cost 40 is above the burst of its rate limit"):

        @registry.task(name="too_dear", rate=Rate.parse("10/s", burst=20), cost=40)
        def too_dear(payload: dict) -> None: ...

    @registry.task(name="ocr", rate=Rate.parse("10/s", burst=20), cost=lambda p: p["pages"])
    def ocr(payload: dict) -> None: ...

    registry.client.open()  # migrated, so the count below can look
    for bad, message in [(40, "above the burst"), (0, "between 1 and"), (2.5, "whole number")]:
        with pytest.raises(ConfigError, match=message):
            ocr.send({"pages": bad})
    with pytest.raises(ConfigError, match="above the burst"):
        ocr.send({"pages": 1}, cost=21)
    # And nothing was created
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_a_key_rate_fits_its_cost_against_the_key_burst() -> None:
    rates = Rates.build("100/s", "5/s", {"big": "50/s"})
    assert check_cost(30, name="t", rates=rates, key="big") == 30
    with pytest.raises(ConfigError, match=r"burst of its rate limit \(5\)"):
        check_cost(30, name="t", rates=rates, key="small")


# -- the claim -------------------------------------------------------------------------------


def test_a_claim_starts_no_more_than_the_bucket_holds_and_says_how_long_to_wait(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    # Given a task limited to 2 a second with a burst of 5, and 50 queued
    @registry.task(name="fetch", rate=Rate.parse("2/s", burst=5))
    def fetch(payload: dict) -> None: ...

    fetch.send_many([{}] * 50)
    w = FakeWorker(db, schema, ["fetch"])
    publish(w, registry)
    # When a worker with 20 free slots claims
    got, wait = w.rate_wait(20)
    # Then it starts the burst, and is told to come back when one more unit is there
    assert len(got) == 5
    assert wait is not None and 0 < wait <= 0.5
    again, wait = w.rate_wait(20)
    assert len(again) <= 1
    assert wait is not None


def test_a_taken_over_task_does_not_spend_a_second_unit(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="embed", rate=Rate.parse("1/h", burst=1))
    def embed(payload: dict) -> None: ...

    embed.send_many([{}] * 2)
    w = FakeWorker(db, schema, ["embed"])
    publish(w, registry)
    [(tid, _)] = w.claim(10)
    # Given the bucket is empty and the worker that started the task died
    assert w.claim(10) == []
    expire_now(db, tid)
    reap(w)
    db.execute("UPDATE tasks SET run_after = now(), state = 'queued' WHERE id = %s", (tid,))
    # When another worker claims
    other = FakeWorker(db, schema, ["embed"])
    got = other.claim(10)
    # Then the taken-over task starts again without a unit, and the other still waits
    assert [t for t, _ in got] == [tid]
    (tokens,) = db.execute("SELECT tokens FROM rate_buckets").fetchone() or (None,)
    assert tokens is not None and tokens < 1


def test_a_retry_after_an_error_spends_again(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="call", rate=Rate.parse("1/h", burst=2))
    def call(payload: dict) -> None: ...

    call.send({})
    w = FakeWorker(db, schema, ["call"])
    publish(w, registry)
    [(tid, attempt)] = w.claim(10)
    w.complete(tid, attempt, outcome="error", error="HTTP 500")
    [(again, _)] = w.claim(10)
    assert again == tid
    (spent,) = db.execute("SELECT spent FROM rate_buckets").fetchone() or (0,)
    assert spent == 2


def test_a_key_at_its_limit_does_not_hold_back_the_other_keys(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    # Given 1 a second per key, a key with a deep backlog first in the queue
    @registry.task(name="crawl", rate_per_key=Rate.parse("1/h", burst=2))
    def crawl(payload: dict) -> None: ...

    crawl.send_many([{}] * 500, partition_key="big.example")
    for key in ("a.example", "b.example", "c.example"):
        crawl.send_many([{}] * 3, partition_key=key)
    w = FakeWorker(db, schema, ["crawl"])
    publish(w, registry)
    # When a worker claims 100
    got = [t for t, _ in w.claim(100)]
    # Then every key started its burst, and no more
    assert Counter(keys_of(db, got)) == {
        "big.example": 2, "a.example": 2, "b.example": 2, "c.example": 2,
    }  # fmt: skip


def test_a_key_of_its_own_gets_its_own_rate(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(
        name="bill", rate_per_key=Rate.parse("1/h", burst=1),
        rate_keys={"enterprise": Rate.parse("1/h", burst=4)},
    )  # fmt: skip
    def bill(payload: dict) -> None: ...

    bill.send_many([{}] * 10, partition_key="enterprise")
    bill.send_many([{}] * 10, partition_key="free")
    w = FakeWorker(db, schema, ["bill"])
    publish(w, registry)
    got = [t for t, _ in w.claim(100)]
    assert Counter(keys_of(db, got)) == {"enterprise": 4, "free": 1}


def test_a_task_spends_its_cost_and_a_dear_one_waits_for_enough(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="ocr", rate=Rate.parse("1/h", burst=50), cost=lambda p: p["pages"])
    def ocr(payload: dict) -> None: ...

    for pages in (40, 5, 10, 1):
        ocr.send({"pages": pages})
    w = FakeWorker(db, schema, ["ocr"])
    publish(w, registry)
    got, wait = w.rate_wait(100)
    ids = [t for t, _ in got]
    costs = [c for (c,) in db.execute("SELECT cost FROM tasks WHERE id = ANY(%s)", (ids,))]
    # 40 + 5 fit in 50; the 10-page one does not, and the 1-page one queues behind it
    # rather than spending what the dear one waits for
    assert sorted(costs) == [5, 40]
    (tokens,) = db.execute("SELECT tokens FROM rate_buckets").fetchone() or (None,)
    assert tokens is not None and math.isclose(tokens, 5, abs_tol=0.01)
    # And the wait is until the bucket holds 10 again: 5 more units at 1 an hour
    assert wait is not None and math.isclose(wait, 5 * 3600, rel_tol=0.01)


def test_a_rate_changed_at_run_time_holds_from_the_next_claim(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="sync", rate=Rate.parse("1/h", burst=1))
    def sync(payload: dict) -> None: ...

    sync.send_many([{}] * 300)
    w = FakeWorker(db, schema, ["sync"])
    publish(w, registry)
    assert len(w.claim(100)) == 1
    assert w.claim(100) == []
    # When an operator raises it
    set_rate(db, "task", "sync", 1000, 100)
    # Then the next claim obeys it (the bucket refills at the new rate)
    assert 1 <= len(w.claim(100)) <= 100
    # And when the code's limit is published again, the operator's still wins
    publish(w, registry)
    db.execute("SELECT pg_sleep(0.2)")
    assert len(w.claim(200)) >= 100
    # And once it is cleared, the code's limit is back
    db.execute("DELETE FROM rate_limits WHERE source = 'operator'")
    db.execute("SELECT pg_sleep(0.05)")
    assert len(w.claim(100)) <= 1


def test_a_queue_rate_covers_every_task_of_the_queue(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    registry.queue("ocr", rate=Rate.parse("1/h", burst=3))

    @registry.task(name="page", queue="ocr")
    def page(payload: dict) -> None: ...

    @registry.task(name="cover", queue="ocr")
    def cover(payload: dict) -> None: ...

    page.send_many([{}] * 5)
    cover.send_many([{}] * 5)
    w = FakeWorker(db, schema, ["page", "cover"], queues=("ocr",))
    publish(w, registry)
    assert len(w.claim(100)) == 3
    assert w.claim(100) == []


def test_rated_and_unrated_work_share_a_claim(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="slow_api", rate=Rate.parse("1/h", burst=2))
    def slow_api(payload: dict) -> None: ...

    @registry.task(name="local")
    def local(payload: dict) -> None: ...

    slow_api.send_many([{}] * 10)
    local.send_many([{}] * 10)
    w = FakeWorker(db, schema, ["slow_api", "local"])
    publish(w, registry)
    names = Counter(
        n for (n,) in db.execute(
            "SELECT task_name FROM tasks WHERE id = ANY(%s)", ([t for t, _ in w.claim(100)],)
        )
    )  # fmt: skip
    assert names == {"slow_api": 2, "local": 10}


def test_a_rate_and_a_concurrency_limit_both_hold(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="both", rate=Rate.parse("1/h", burst=10), max_concurrency=3)
    def both(payload: dict) -> None: ...

    both.send_many([{}] * 20)
    w = FakeWorker(db, schema, ["both"])
    w.publish_limits("both", 3)
    publish(w, registry)
    first = w.claim(100)
    assert len(first) == 3  # the concurrency limit
    for tid, attempt in first:
        w.complete(tid, attempt)
    assert len(w.claim(100)) == 3
    (spent,) = db.execute("SELECT spent FROM rate_buckets").fetchone() or (0,)
    assert spent == 6


def test_racing_claimers_never_jointly_spend_more_than_the_burst(
    registry: Registry, db: psycopg.Connection[Any], schema: str, database_url: str
) -> None:
    # Given a bucket of 25 units that refills once an hour, and 500 tasks
    @registry.task(name="quota", rate=Rate.parse("1/h", burst=25))
    def quota(payload: dict) -> None: ...

    quota.send_many([{}] * 500)
    publish(FakeWorker(db, schema, ["quota"]), registry)
    got: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            w = FakeWorker(conn, schema, ["quota"])
            for _ in range(10):
                mine = w.claim(7)
                with lock:
                    got.extend(t for t, _ in mine)

    # When eight workers claim at once, ten times each
    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly the burst started, each task once
    assert len(got) == len(set(got)) == 25


def test_a_task_told_to_slow_down_slows_its_key(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="api", rate_per_key=Rate.parse("100/s", burst=10))
    def api(payload: dict) -> None: ...

    api.send_many([{}] * 30, partition_key="tenant-a")
    api.send_many([{}] * 30, partition_key="tenant-b")
    w = FakeWorker(db, schema, ["api"])
    publish(w, registry)
    claimed = w.claim(100)
    a = [t for t, k in zip([t for t, _ in claimed], keys_of(db, [t for t, _ in claimed]),
                           strict=True) if k == "tenant-a"]  # fmt: skip
    # When a task of tenant-a was told "429, slow down" and asks for a tenth for 60 s
    (slowed,) = w.run("rate_slow_down", ids=[a[0]], factors=[0.1], seconds=[60.0])[0]
    assert slowed == 1
    row = db.execute(
        "SELECT slow_factor, slow_until > now() + interval '50 seconds' FROM rate_buckets "
        "WHERE key = 'tenant-a'"
    ).fetchone()
    assert row is not None and math.isclose(row[0], 0.1) and row[1]
    # Then tenant-a's bucket refills at a tenth, and tenant-b's is untouched
    db.execute("SELECT pg_sleep(0.3)")
    later = [t for t, _ in w.claim(100)]
    per_key = Counter(keys_of(db, later))
    assert per_key["tenant-a"] <= 4
    assert per_key["tenant-b"] >= 10
    assert RetryAfter(1, "429", slow_down=0.1).slow_down == 0.1


# -- operators: the command line, status and /metrics ------------------------------------


def test_operators_set_list_and_clear_a_rate_and_status_names_the_queue_it_holds(
    registry: Registry, db: psycopg.Connection[Any], schema: str, operator_cli: Any
) -> None:
    @registry.task(name="ocr", rate="10/s")
    def ocr(payload: dict) -> None: ...

    ocr.send_many([{}] * 10)
    w = FakeWorker(db, schema, ["ocr"])
    publish(w, registry)
    # When an operator sets a slower rate with a burst of 2
    out = operator_cli("rates", "set", "task:ocr", "1/h", "--burst", "2")
    assert "rate of task:ocr set to 1/h (burst 2)" in out
    # Then it is in force over the code's, and listed with the code's beside it
    [row] = json.loads(operator_cli("rates", "list", "--json"))["rates"]
    assert (row["source"], row["per_second"], row["code_per_second"]) == ("operator", 1 / 3600, 10)
    assert len(w.claim(10)) == 2
    assert w.claim(10) == []
    # And status says the queue waits on the rate, not that it is stuck
    document = json.loads(operator_cli("status", "--json"))
    assert [r["held_queue"] for r in document["rate_limits"]] == ["default"]
    text = operator_cli("status")
    assert "default (rate-limited)" in text and "holding back default" in text
    # When it is cleared, the code's rate holds again
    assert "rate of task:ocr cleared" in operator_cli("rates", "clear", "task:ocr")
    [row] = json.loads(operator_cli("rates", "list", "--json"))["rates"]
    assert (row["source"], row["per_second"]) == ("code", 10)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["rates", "set", "task:ocr", "fast"], "must be a rate like '50/s'"),
        (["rates", "set", "task:ocr", "0/s"], "more than 0 per period"),
        (["rates", "set", "task:ocr", "5/s", "--burst", "0"], "burst: must be at least 1"),
        (["rates", "set", "ocr", "5/s"], "a rate limit is task:NAME or queue:NAME"),
        (["rates", "set", "task:ocr", "5/s", "--key", "k", "--each-key"], "not both"),
        (["rates", "clear", "queue:none"], "no rate set by an operator for queue:none"),
    ],
)
def test_a_bad_rate_on_the_command_line_is_one_line_and_sets_nothing(
    registry: Registry, db: psycopg.Connection[Any], schema: str, database_url: str,
    args: list[str], expected: str,
) -> None:  # fmt: skip
    registry.client.open()
    done = tenure_cli(*args, "--dsn", database_url, "--schema", schema)
    assert done.returncode != 0 and done.stderr.startswith("error: "), done.stderr
    assert expected in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert db.execute("SELECT count(*) FROM rate_limits").fetchone() == (0,)


def test_metrics_show_each_rate_limit_and_whether_it_holds_work_back(
    fleet_app: Any, workers: Any
) -> None:
    # Given a worker serving /metrics, and a rate an operator set on its queue
    fleet_app.reg.client.set_rate("1/h", queue="work", burst=1)
    port = free_port()
    workers("--lease", "3s", "--metrics-port", str(port), "--health-port", str(port))
    eventually(lambda: get(port, "/readyz")[0] == 200, what="worker ready")
    # When two tasks wait on it
    fleet_app.sleepy.send_many([{"s": 0}] * 2)
    labels = 'scope="queue",name="work",kind="all",key=""'

    def scraped() -> str | None:
        text = get(port, "/metrics")[1]
        return text if sample(text, "tenure_rate_holding_back", labels) == 1 else None

    # Then the scrape gives the rate, the empty bucket and the hold
    text = eventually(scraped, what="a scrape that shows the queue held back", timeout=30)
    assert sample(text, "tenure_rate_limit_per_second", labels) == pytest.approx(1 / 3600)
    assert sample(text, "tenure_rate_tokens", labels) < 1  # type: ignore[operator]
    assert sample(text, "tenure_rate_slowed_to", labels) == 1


def test_a_rated_task_sent_unflagged_by_an_older_release_is_still_claimed_under_its_rate(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="legacy", rate=Rate.parse("1/h", burst=2))
    def legacy(payload: dict) -> None: ...

    registry.client.open()
    w = FakeWorker(db, schema, ["legacy"])
    publish(w, registry)
    # Given three rows of the rated name sent as a release before 0.3.0 sends them:
    # without the limited flag that rated rows carry
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes)"
        " SELECT 'legacy', 'default', '{}', 5, 3 FROM generate_series(1, 3)"
    )
    # When a worker claims
    got = w.claim(10)
    # Then they are found near the head and claimed under the rate: its burst, no more
    assert len(got) == 2
    assert w.claim(10) == []
    assert db.execute("SELECT count(*) FROM tasks WHERE NOT limited").fetchone() == (0,)


def test_a_task_that_raises_retry_after_with_slow_down_slows_its_key_in_a_real_worker(
    db: psycopg.Connection[Any], workers: Any, schema: str, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    app = load_app("tests.apps.rated", schema, database_url, monkeypatch)
    # Given a task that the API answers "429" once, for tenant-a
    handle = app.told_to_slow_down.send({}, partition_key="tenant-a")
    workers("--lease", "3s", app="tests.apps.rated:reg")
    # When it has run again and succeeded
    eventually(lambda: handle.state() == "succeeded", timeout=30)
    # Then tenant-a's bucket refills at a quarter of its rate for about a minute
    row = db.execute(
        "SELECT slow_factor, extract(epoch FROM slow_until - now()) FROM rate_buckets"
        " WHERE name = 'told_to_slow_down' AND key = 'tenant-a'"
    ).fetchone()
    assert row is not None and math.isclose(row[0], 0.25) and 50 < row[1] <= 60
    # And the first attempt's error says why
    first = db.execute("SELECT error FROM attempts WHERE task_id = %s AND attempt = 1",
                       (handle.id,)).fetchone()  # fmt: skip
    assert first is not None and "429" in first[0]
    app.reg.client.close()
