"""Tasks the acceptance tests run on real worker processes.

The schema comes from ``TENURE_TEST_SCHEMA`` so every test gets its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pydantic

import tenure
from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_TEST_SCHEMA", "tenure_test"))


@reg.task(queue="work")
def sleepy(payload: dict) -> float:
    """Sleep ``s`` seconds (default 0)."""
    time.sleep(float(payload.get("s", 0)))
    return float(payload.get("s", 0))


@reg.task(queue="work")
def sleepy_where(payload: dict) -> int:
    """Sleep ``s`` seconds (``later_s`` in a later attempt); return the worker's pid."""
    later = tenure.current().attempt > 1 and "later_s" in payload
    time.sleep(float(payload["later_s"] if later else payload.get("s", 0)))
    return os.getpid()


@reg.task(queue="work")
async def async_sleepy(payload: dict) -> str:
    await asyncio.sleep(float(payload.get("s", 0)))
    return "done"


@reg.task(queue="work", max_concurrency=1)
def one_at_a_time(payload: dict) -> None:
    time.sleep(float(payload.get("s", 0.05)))


@reg.task(
    queue="work",
    max_attempts=3,
    backoff=tenure.Backoff(base=__import__("datetime").timedelta(seconds=0.3), jitter=0.0),
)
def always_fails(payload: dict) -> None:
    raise RuntimeError(f"always fails: {payload.get('why', 'no reason')}")


@reg.task(queue="work", max_crashes=2)
def kills_its_worker(payload: dict) -> None:
    """A poison task: takes its whole worker process down every time."""
    os.kill(os.getpid(), signal.SIGKILL)


@reg.task(queue="work")
def slow_then_fail_first(payload: dict) -> str:
    """Attempt 1 sleeps ``s`` then fails; later attempts succeed at once."""
    ctx = tenure.current()
    if ctx.attempt == 1:
        time.sleep(float(payload["s"]))
        raise RuntimeError("the first attempt fails late")
    return f"attempt {ctx.attempt}"


class Document(pydantic.BaseModel):
    uri: str
    pages: int


@reg.task(queue="work")
def typed(payload: Document) -> int:
    return payload.pages


@reg.task(queue="work")
def notices_lease_loss(payload: dict) -> str:
    """Attempt 1 waits for ``current().lease_lost`` and writes what it saw to ``path``."""
    ctx = tenure.current()
    if ctx.attempt > 1:
        return "later attempt"
    deadline = time.monotonic() + float(payload.get("wait", 20))
    while time.monotonic() < deadline:
        if ctx.lease_lost.wait(0.05):
            with open(payload["path"], "w") as out:
                out.write(f"lost attempt {ctx.attempt}; stop={ctx.stop.is_set()}")
            return "noticed"
    return "never noticed"


@reg.task(queue="work", timeout=0.5, max_attempts=2, backoff=0.1)
def too_slow(payload: dict) -> None:
    time.sleep(5)


@reg.task(queue="work", timeout=0.5, max_attempts=2, backoff=0.1)
async def too_slow_async(payload: dict) -> None:
    await asyncio.sleep(5)


@reg.task(queue="work")
def raises_nul(payload: dict) -> None:
    raise ValueError("bad\x00byte")


@reg.task(queue="work")
def returns_nul(payload: dict) -> str:
    return "nul\x00inside"


class Picky(pydantic.BaseModel):
    value: str

    @pydantic.field_validator("value")
    @classmethod
    def no_boom(cls, v: str) -> str:
        if v == "boom":
            raise KeyError("a validator that raises something other than ValueError")
        return v


@reg.task(queue="work")
def picky(payload: Picky) -> str:
    return payload.value


@reg.task(queue="work", max_concurrency=3)
def three_at_a_time(payload: dict) -> None:
    time.sleep(float(payload.get("s", 0.005)))


@reg.task(queue="tenants")
def tenant_work(payload: dict) -> None:
    time.sleep(float(payload.get("s", 0.01)))


@reg.task(queue="flood")
def flood_work(payload: dict) -> None:
    time.sleep(float(payload.get("s", 0.01)))


@reg.task(queue="side")
def side_work(payload: dict) -> None:
    time.sleep(float(payload.get("s", 0.01)))


class Summary(pydantic.BaseModel):
    pages: int
    title: str


@reg.task(queue="work")
def summarise(payload: dict) -> Summary:
    return Summary(pages=int(payload["pages"]), title=str(payload["title"]))


@reg.task(queue="work")
async def waits_async(payload: dict) -> str:
    await asyncio.sleep(float(payload.get("s", 30)))
    return "finished"


@reg.task(queue="work")
def waits_in_thread(payload: dict) -> str:
    ctx = tenure.current()
    ctx.stop.wait(float(payload.get("s", 30)))
    return "stopped early" if ctx.stop.is_set() else "finished"


@reg.task(queue="work", isolation="process", timeout=1.0, max_attempts=3, backoff=0.1)
def stuck_in_c_first(payload: dict) -> int:
    """Attempt 1 is stuck in a C-level regex loop holding the GIL; later ones return."""
    if tenure.current().attempt == 1:
        import re

        re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking, inside C
    return os.getpid()


@reg.task(queue="work", isolation="process")
def process_pid(payload: dict) -> int:
    time.sleep(float(payload.get("s", 0)))
    return os.getpid()


@reg.task(queue="work", isolation="process")
def process_sleeps(payload: dict) -> int:
    time.sleep(float(payload.get("s", 30)))
    return os.getpid()


_hoard: list[bytes] = []


@reg.task(queue="work", isolation="process")
def leaks(payload: dict) -> int:
    _hoard.append(b"x" * int(payload.get("mb", 80)) * 2**20)
    return os.getpid()
