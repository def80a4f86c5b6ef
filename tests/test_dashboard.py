"""The web dashboard, served by a real ``tenure dashboard`` process on a real database.

Browser tests drive Debian's Chromium through Playwright against a live fleet of
worker processes; they are skipped, saying why, only where /usr/bin/chromium is
absent. A screenshot of the overview during a run is saved to
``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import http.cookiejar
import os
import random
import re
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import CHILD_PYTHONPATH, ROOT, eventually, task_in, worker_id_of
from tests.test_schedules import BEATS_DDL

pytestmark = pytest.mark.acceptance

CHROMIUM = "/usr/bin/chromium"
TOKEN = "s3cret-token-for-tests-0123456789"
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dashboard:
    """A ``tenure dashboard ARGS`` process and a tiny HTTP client for it; ``env`` adds
    variables to this process's."""

    def __init__(self, log_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"dashboard-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tenure", "dashboard", "--port", str(self.port), *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

        def up() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        eventually(up, timeout=30, what="dashboard listening")

    def request(
        self,
        path: str,
        *,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, Any]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, r.read().decode(errors="replace"), r.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace"), exc.headers

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def dashboard(
    database_url: str, schema: str, tmp_path: Path, fleet_app: Any
) -> Iterator[Callable[..., Dashboard]]:
    started: list[Dashboard] = []
    fleet_app.reg.client.open()  # migrate the test schema first

    def start(*args: str) -> Dashboard:
        d = Dashboard(tmp_path, "--dsn", database_url, "--schema", schema, "--refresh", "1", *args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


# -- access --------------------------------------------------------------------------


def test_binding_beyond_localhost_needs_a_token_and_every_request_carries_it(
    dashboard: Any, database_url: str, schema: str
) -> None:
    # Without a token, binding to all interfaces is refused in one line
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "tenure",
            "dashboard",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--dsn",
            database_url,
            "--schema",
            schema,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TENURE_DASHBOARD_TOKEN": ""},
    )
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--auth-token" in refused.stderr
    # With one, every page, asset and action without it is refused
    d = dashboard("--host", "0.0.0.0", "--auth-token", TOKEN)
    for path in [
        "/",
        "/tasks",
        "/tasks/1",
        "/static/htmx.min.js",
        "/static/dashboard.css",
        "/nope",
    ]:
        assert d.request(path)[0] == 401, path
        assert d.request(path, headers={"Authorization": "Bearer wrong-token-0123456"})[0] == 401
    status, _, _ = d.request("/queues/work/pause", data={"csrf": "x"})
    assert status == 401
    assert d.request("/?token=wrong")[0] == 401
    # A bearer token is enough for a script
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert d.request("/", headers=auth)[0] == 200
    # A browser visits /?token=… once, gets a cookie and is sent on without the token
    status, _, headers = d.request(f"/tasks?state=queued&token={TOKEN}")
    assert status == 303 and headers["location"] == "/tasks?state=queued"
    assert d.request("/tasks?state=queued")[0] == 200
    assert d.request("/static/htmx.min.js")[0] == 200


def test_on_localhost_only_loopback_host_names_are_served(dashboard: Any) -> None:
    d = dashboard()
    assert d.request("/")[0] == 200
    assert d.request("/", headers={"Host": f"localhost:{d.port}"})[0] == 200
    # A page elsewhere that rebinds its own name to 127.0.0.1 is refused
    assert d.request("/", headers={"Host": f"evil.example:{d.port}"})[0] == 403


def test_actions_need_post_and_a_matching_csrf_token(
    dashboard: Any, db: psycopg.Connection[Any]
) -> None:
    d = dashboard()
    assert d.request("/")[0] == 200
    csrf = d.cookie("tenure_csrf")
    assert csrf
    db.execute("INSERT INTO queues (name) VALUES ('work')")  # as a worker publishes it
    paused = "SELECT coalesce((SELECT paused FROM queues WHERE name = 'work'), false)"
    # GET never acts
    assert d.request("/queues/work/pause")[0] == 405
    # A POST without the token, with another token, or from another site is refused
    assert d.request("/queues/work/pause", data={})[0] == 403
    assert d.request("/queues/work/pause", data={"csrf": "x" * 43})[0] == 403
    cross = {"Origin": "http://evil.example"}
    assert d.request("/queues/work/pause", data={"csrf": csrf}, headers=cross)[0] == 403
    assert db.execute(paused).fetchone() == (False,)
    # With it, the action is done and the browser sent back where it came from
    status, _, headers = d.request("/queues/work/pause", data={"csrf": csrf, "next": "/tasks"})
    assert status == 303 and headers["location"] == "/tasks"
    assert db.execute(paused).fetchone() == (True,)
    # A `next` pointing at another site is ignored
    status, _, headers = d.request(
        "/queues/work/resume", data={"csrf": csrf, "next": "//evil.example/"}
    )
    assert status == 303 and headers["location"] == "/"
    assert db.execute(paused).fetchone() == (False,)


def test_retry_by_post_says_whether_it_queued_the_task(
    dashboard: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a queued, a succeeded and a failed task, and a dashboard with its CSRF cookie
    d = dashboard()
    assert d.request("/")[0] == 200
    csrf = d.cookie("tenure_csrf") or ""
    for state in ("queued", "succeeded", "failed"):
        task_id = task_in(db, state)
        # When the operator presses Retry on it
        status, _, headers = d.request(f"/tasks/{task_id}/retry", data={"csrf": csrf})
        assert status == 303 and headers["location"] == f"/tasks/{task_id}"
        # Then the page it lands on says what happened: queued again only when it was
        page = d.request(f"/tasks/{task_id}")[1]
        flash = re.search(r'<div class="flash" role="status">(.*?)</div>', page)
        assert flash is not None, page[:500]
        if state == "failed":
            assert flash.group(1) == f"Task {task_id} queued again"
        else:
            assert flash.group(1) == (
                f"Task {task_id} is {state}: nothing to retry (only failed, quarantined or "
                "cancelled tasks can be retried)"
            )
        shown = re.search(r'id="task-state"><span [^>]*>([a-z]+)</span>', page)
        assert shown is not None and shown.group(1) == ("queued" if state == "failed" else state)


def peak_memory_kb(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def post_streamed(
    port: int, path: str, total: int, *, chunked: bool, wait: float = 0
) -> tuple[int, int]:
    """POST ``total`` bytes to ``path`` in 64 KiB pieces, stopping as soon as the
    server answers (waiting up to ``wait`` seconds for an answer to the headers alone
    first); the answer's status and the bytes of body sent by then."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n".encode()
    )
    piece = b"a" * 65536
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    sent = 0
    with sock:
        try:
            answered = bool(select.select([sock], [], [], wait)[0])
            while not answered and sent < total:
                readable, writable, _ = select.select([sock], [sock], [], 30)
                assert readable or writable, "the server neither reads nor answers"
                answered = bool(readable)
                if not answered:
                    sock.sendall(frame)
                    sent += len(piece)
            if not answered and chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while this was still sending
        answer = b""
        try:
            while b"\r\n" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1]), sent


def test_a_huge_form_is_refused_while_it_streams_without_being_held(dashboard: Any) -> None:
    # Given a dashboard that has served a page and refused a small bad form
    d = dashboard()
    assert d.request("/")[0] == 200
    assert d.request("/queues/work/pause", data={"csrf": "x"})[0] == 403
    before = peak_memory_kb(d.proc.pid)
    # When a 600 MB form is declared, it is refused before a byte of it is sent
    status, sent = post_streamed(d.port, "/queues/work/pause", 600 << 20, chunked=False, wait=10)
    assert (status, sent) == (413, 0)
    # And when one is sent chunked, with no length, it is refused once past the cap
    # (what was sent by then sits in the sockets' buffers, not in the dashboard)
    status, sent = post_streamed(d.port, "/queues/work/pause", 600 << 20, chunked=True)
    assert status == 413 and sent < 64 << 20
    # Then the dashboard's peak memory barely moved, and it still serves
    assert peak_memory_kb(d.proc.pid) - before < 20_000
    assert d.request("/")[0] == 200
    # And a form just over the cap gets the same 413
    assert d.request("/queues/work/pause", data={"csrf": "x" * 5000})[0] == 413


def test_every_response_forbids_framing_sniffing_and_foreign_scripts(dashboard: Any) -> None:
    d = dashboard()
    for path, headers, expected in [
        ("/", {}, 200),
        ("/tasks?state=bogus", {}, 400),
        ("/static/htmx.min.js", {}, 200),
        ("/nope", {}, 404),
        ("/", {"Host": "evil.example"}, 403),
    ]:
        status, _, got = d.request(path, headers=headers)
        assert status == expected, path
        assert got["x-frame-options"] == "DENY", path
        assert got["x-content-type-options"] == "nosniff", path
        policy = got["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy
    # And no page needs an inline script or handler that such a policy would block
    page = d.request("/")[1]
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"\son[a-z]+=", page)


def test_host_names_that_only_start_like_loopback_are_refused(dashboard: Any) -> None:
    d = dashboard()
    for host in [f"[::1]:{d.port}", "[::1]", f"127.0.0.1:{d.port}", "LOCALHOST"]:
        assert d.request("/", headers={"Host": host})[0] == 200, host
    for host in ["[::1].evil.com", "localhost.evil.com", "127.0.0.1.evil.com", "::1", ""]:
        assert d.request("/", headers={"Host": host})[0] == 403, host


BAD_QUERIES = [
    "/tasks?state=bogus",
    "/tasks?state=%00",
    "/tasks?limit=0",
    "/tasks?limit=-1",
    "/tasks?limit=501",
    "/tasks?limit=1e3",
    "/tasks?limit=99999999999999999999999",
    "/tasks?before=abc",
    "/tasks?before=0",
    "/tasks?before=9223372036854775808",
    "/tasks?before=%EF%BC%91",  # a full-width digit
    "/tasks?queue=%00",
    "/tasks?queue=" + "q" * 201,
    "/tasks?task=a%0Ab",
    "/tasks?key=%7F",
    "/tasks/abc",
    "/tasks/0",
    "/tasks/-1",
    "/tasks/1.5",
    "/tasks/99999999999999999999999",
    "/tasks/9223372036854775808",
    "/tasks/%00",
    "/tasks/123456789",  # a well-formed id that names no task
    "/tasks/%F0%9F%92%A5",
    "/nope",
    "/static/../app.py",
    "/static/nope.js",
]


def test_bad_query_parameters_get_4xx_never_500(dashboard: Any) -> None:
    d = dashboard()
    for path in BAD_QUERIES:
        status, body, _ = d.request(path)
        assert 400 <= status < 500, (path, status, body[:300])
    # Bad action targets, with a valid CSRF token, are 4xx too
    d.request("/")
    csrf = d.cookie("tenure_csrf") or ""
    for path in [
        "/tasks/abc/retry",
        "/tasks/1/explode",
        "/tasks/123456789/cancel",
        "/workers/not-a-uuid/drain",
        "/queues/work/delete",
        "/tasks/0/retry",
    ]:
        status, body, _ = d.request(path, data={"csrf": csrf})
        assert 400 <= status < 500, (path, status, body[:300])
    # And a seeded fuzz of every filter with hostile values never reaches a 500
    rng = random.Random(8)
    alphabet = [
        "%00",
        "%FF",
        "%27",
        "%22",
        "%3B",
        "--",
        "%5C",
        "%E2%80%AE",
        "9" * 30,
        "-",
        "a",
        "%20",
        "%0D%0A",
        "%25",
        "%2F",
        "null",
        "1",
        "%F0%9F%93%A6",
    ]
    for _ in range(120):
        name = rng.choice(["queue", "state", "task", "key", "before", "limit", "token", "x"])
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        status, body, _ = d.request(f"/tasks?{name}={value}")
        assert status < 500, (name, value, status, body[:300])
    # Good filters still work
    for path in ["/tasks?state=queued&queue=work&limit=5", "/tasks?task=x&key=k&before=10", "/"]:
        assert d.request(path)[0] == 200, path


# -- the browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium); browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--headless",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()


def test_browser_sees_a_task_go_from_queued_to_succeeded(
    dashboard: Any, fleet_app: Any, workers: Any, page: Any
) -> None:
    from playwright.sync_api import expect

    # Given a task sent while no worker runs, and a busy fleet's history
    d = dashboard()
    fleet_app.always_fails.send({"why": "disk full"})
    fleet_app.sleepy.send_many([{"s": 0}] * 30)
    handle = fleet_app.sleepy.send({"s": 0.2}, partition_key="tenant-a")
    fleet_app.tenant_work.send_many([{"s": 0.5}] * 12, partition_key="tenant-b")
    page.goto(f"{d.base}/tasks/{handle.id}")
    expect(page.locator("#task-state")).to_have_text("queued")
    expect(page.locator("pre.code").first).to_contain_text('"s": 0.2')
    # When workers start, the open page follows the task without a reload
    workers("--lease", "3s", "--concurrency", "2")
    workers("--lease", "3s", "--concurrency", "2")
    expect(page.locator("#task-state")).to_have_text("succeeded")
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    expect(page.locator("#attempts")).to_contain_text("succeeded")
    # And the overview shows the fleet at work (saved as the run's screenshot)
    page.goto(f"{d.base}/")
    expect(page.locator("#workers tbody tr")).to_have_count(2)
    expect(page.locator('#queues tr[data-queue="work"]')).to_be_visible()
    # tenant-b's tasks finish within seconds of the workers starting, so the row's
    # "running" cell may already be back to 0; its finished-per-minute stays for a minute
    expect(page.locator('#queues tr[data-queue="tenants"] td').nth(7)).not_to_have_text("0")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.goto(f"{d.base}/tasks?queue=work")
    expect(page.locator("#tasks")).to_contain_text("disk full")
    page.screenshot(path=str(ARTIFACTS / "dashboard-tasks.png"), full_page=True)


def test_browser_retries_a_failed_task_by_clicking(
    dashboard: Any, fleet_app: Any, workers: Any, page: Any
) -> None:
    from playwright.sync_api import expect

    d = dashboard()
    failing = fleet_app.always_fails.send({"why": "for the retry test"})
    workers("--lease", "3s")
    eventually(lambda: failing.state() == "failed", timeout=30)
    page.goto(f"{d.base}/tasks/{failing.id}")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#attempts tbody tr")).to_have_count(3)
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash")).to_have_text(f"Task {failing.id} queued again")
    # The retried task runs its three attempts again and fails again
    expect(page.locator("#attempts tbody tr")).to_have_count(6, timeout=30_000)
    expect(page.locator("#task-state")).to_have_text("failed")
    page.screenshot(path=str(ARTIFACTS / "dashboard-task.png"), full_page=True)
    assert [a.attempt for a in fleet_app.reg.client.attempts(failing.id)] == [1, 2, 3, 4, 5, 6]


def test_browser_pauses_a_queue_and_claims_stop(
    dashboard: Any, fleet_app: Any, workers: Any, page: Any
) -> None:
    from playwright.sync_api import expect

    d = dashboard()
    workers("--lease", "3s", "--poll-interval", "200ms")
    warm = fleet_app.sleepy.send({"s": 0})
    eventually(lambda: warm.state() == "succeeded", timeout=20)
    page.goto(f"{d.base}/")
    row = page.locator('#queues tr[data-queue="work"]')
    # When the operator pauses the queue
    row.get_by_role("button", name="Pause").click()
    expect(page.locator(".flash")).to_have_text("Queue work paused")
    expect(row.locator(".badge")).to_have_text("paused")
    # Then tasks sent to it stay queued: nothing claims them for several polls
    held = fleet_app.sleepy.send_many([{"s": 0}] * 5)
    time.sleep(2.0)
    assert {h.state() for h in held} == {"queued"}
    expect(row.locator("td").nth(2)).to_have_text("5")
    # And when it is resumed, they run at once
    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".badge")).to_have_text("active")
    eventually(lambda: all(h.state() == "succeeded" for h in held), timeout=20)
    assert re.search(r"\d", row.locator("td").nth(7).inner_text())


def test_browser_asks_before_draining_and_the_policy_blocks_nothing_the_pages_use(
    dashboard: Any, workers: Any, db: psycopg.Connection[Any], page: Any
) -> None:
    from playwright.sync_api import expect

    # Given a dashboard whose pages are watched for anything their policy blocks
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    d = dashboard()
    w = workers("--lease", "3s")
    wid = str(worker_id_of(db, w.pid))
    drain_asked = "SELECT drain_requested FROM workers WHERE id = %s"
    page.goto(f"{d.base}/")
    button = page.locator("#workers").get_by_role("button", name="Drain")
    # When the operator clicks Drain and says no, the worker is left alone
    questions: list[str] = []

    def answer(accept: bool) -> Callable[[Any], None]:
        def on_dialog(dialog: Any) -> None:
            questions.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return on_dialog

    page.once("dialog", answer(False))
    button.click()
    eventually(lambda: questions, what="the confirm dialog")
    assert questions[0].startswith(f"Drain worker {wid[:8]}? It stops claiming")
    assert db.execute(drain_asked, (wid,)).fetchone() == (False,)
    # And when they say yes, it is asked to drain
    page.once("dialog", answer(True))
    button.click()
    expect(page.locator(".flash")).to_have_text(f"Worker {wid[:8]} asked to drain")
    assert len(questions) == 2
    assert w.wait(30) == 0
    # Then the live refresh went on and every page loaded without a policy violation
    page.goto(f"{d.base}/tasks")
    page.wait_for_timeout(1500)  # a refresh or two of #live
    assert blocked == []


def test_browser_shows_schedules_and_pauses_triggers_and_resumes_one(
    dashboard: Any, workers: Any, db: psycopg.Connection[Any], page: Any
) -> None:
    from playwright.sync_api import expect

    def ticks(outcome: str = "sent") -> int:
        row = db.execute(
            "SELECT count(*) FROM schedule_ticks WHERE schedule = 'every-second' AND outcome = %s",
            (outcome,),
        ).fetchone()
        return int(row[0]) if row else 0

    # Given a worker sending the schedules app's ticks (every second, every minute)
    d = dashboard()
    db.execute(BEATS_DDL)
    workers("--lease", "3s", "--queues", "timed", app="tests.apps.schedules:reg")
    eventually(lambda: ticks() >= 2, timeout=30, what="ticks sent")
    page.goto(f"{d.base}/")
    row = page.locator('#schedules tr[data-schedule="every-second"]')
    expect(row).to_contain_text("every 1 s")
    expect(row.locator(".badge").first).to_have_text("active")
    expect(page.locator('#schedules tr[data-schedule="every-minute"]')).to_contain_text(
        "cron * * * * *"
    )
    page.screenshot(path=str(ARTIFACTS / "dashboard-schedules.png"), full_page=True)
    # When the operator pauses it, no tick is sent for several seconds
    row.get_by_role("button", name="Pause").click()
    expect(page.locator(".flash")).to_have_text("Schedule every-second paused")
    expect(row.locator(".badge").first).to_have_text("paused")
    paused_at = ticks()
    time.sleep(2.5)
    assert ticks() == paused_at
    # And a run asked for while paused is sent, once
    row.get_by_role("button", name="Run now").click()
    expect(page.locator(".flash")).to_have_text("Schedule every-second asked to run now")
    eventually(lambda: ticks("triggered") == 1, timeout=10, what="the run asked for")
    # When it is resumed, it ticks again
    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".badge").first).to_have_text("active")
    eventually(lambda: ticks() > paused_at, timeout=10, what="ticks after the resume")


def test_browser_shows_a_rate_limit_holding_its_queue_back(
    dashboard: Any, fleet_app: Any, workers: Any, page: Any
) -> None:
    from playwright.sync_api import expect

    # Given a queue limited to 1 task an hour after a burst of 2, and 5 tasks for it
    fleet_app.reg.client.set_rate("1/h", queue="work", burst=2)
    d = dashboard()
    workers("--lease", "3s", "--poll-interval", "200ms")
    handles = fleet_app.sleepy.send_many([{"s": 0}] * 5)
    eventually(lambda: sum(h.state() == "succeeded" for h in handles) == 2, timeout=20)
    # When the operator looks at the dashboard
    page.goto(f"{d.base}/")
    # Then the queue is shown waiting on the rate, not stuck, and the limit with it
    expect(page.locator('#queues tr[data-queue="work"] .badge')).to_have_text("rate-limited")
    rate = page.locator('#rates tr[data-rate="queue work"]')
    expect(rate).to_contain_text("1/h (burst 2)")
    expect(rate).to_contain_text("holding back work")
    expect(rate).to_contain_text("operator")
    page.screenshot(path=str(ARTIFACTS / "dashboard-rates.png"), full_page=True)
    assert sum(h.state() == "queued" for h in handles) == 3
