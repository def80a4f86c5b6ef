"""The operator surfaces' pure functions, in process (no database): the dashboard's
history and sparklines, ages, the CLI's sizes, the dashboard's redirect and filters."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from tenure._cli.params import parse_size
from tenure._store.rows import MinuteCounts
from tenure.dashboard import app, views
from tenure.errors import ConfigError


def test_history_walks_depth_back_from_now_and_drops_minutes_outside_the_hour() -> None:
    rows = [
        MinuteCounts("docs", 0, arrived=5, finished=2),  # this minute: +5 -2
        MinuteCounts("docs", 1, arrived=0, finished=4),  # a minute ago: -4
        MinuteCounts("docs", views.HISTORY_MINUTES, arrived=99, finished=99),  # too old
    ]
    lines = views._history(rows, {"docs": 10, "idle": 3})
    docs = lines["docs"]
    assert docs.depth[-1] == 10  # now
    assert docs.depth[-2] == 10 - 5 + 2  # at the end of the minute before: 7
    assert docs.depth[-3] == 7 + 4  # before the 4 finished: 11
    assert docs.finished[-1] == 2 and docs.finished[-2] == 4 and sum(docs.finished) == 6
    assert lines["idle"].depth == [3] * views.HISTORY_MINUTES  # a queue with no rows
    # Depth never goes below zero, however the counts disagree with it.
    odd = views._history([MinuteCounts("q", 0, arrived=50, finished=0)], {"q": 1})["q"]
    assert min(odd.depth) == 0


def test_a_sparkline_scales_to_its_box_and_survives_an_empty_hour() -> None:
    line = views.Sparkline(finished=[0, 5, 10], depth=[0, 0, 8], width=90, height=32)
    bars = line.bars
    assert [round(x, 1) for x, _, _ in bars] == [0.0, 30.0, 60.0]
    assert bars[2][2] == 32 - 4 and bars[0][2] == 0  # the tallest fills the box
    assert line.depth_points.split()[-1] == "90.0,2.0" and line.peak_depth == 8
    empty = views.Sparkline(finished=[0] * 3, depth=[0] * 3)
    assert all(h == 0 for _, _, h in empty.bars) and empty.depth_points


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "–"), (-3, "0s"), (59.9, "59s"), (60, "1m 00s"), (190, "3m 10s"),
     (7500, "2h 05m"), (273600, "3d 4h")],
)  # fmt: skip
def test_age_is_short_and_in_the_largest_units(seconds: float | None, shown: str) -> None:
    assert views.age(seconds) == shown


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("500MB", 500 * 2**20),
        ("2g", 2 * 2**30),
        (" 1.5kb ", 1536),
        ("5 MB", 5 * 2**20),
    ],
)
def test_sizes_read_as_bytes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "0", "-5MB", "nanMB", "infGB", "5TB", "MB5"])
def test_a_size_that_is_not_one_is_one_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^max_memory_per_child: .* is not a size; write it"):
        parse_size(text)


@pytest.mark.parametrize(
    ("raw", "goes_to"),
    [("/tasks?state=failed", "/tasks?state=failed"), (None, "/"), ("", "/"),
     ("https://elsewhere.example/", "/"), ("//elsewhere.example/", "/"), ("/\\x", "/"),
     ("/a\r\nSet-Cookie: x=1", "/"), ("/" + "a" * 2001, "/")],
)  # fmt: skip
def test_after_an_action_the_dashboard_only_goes_back_to_a_local_path(
    raw: str | None, goes_to: str
) -> None:
    assert app.safe_next(raw, "/") == goes_to


def test_task_filters_are_read_and_bounded() -> None:
    filters = app.parse_filters(QueryParams("state=failed&queue=docs&limit=20&before=100"))
    assert (filters.state, filters.queue, filters.limit, filters.before) == (
        "failed", "docs", 20, 100,
    )  # fmt: skip
    assert app.parse_filters(QueryParams("")).limit == 50
    for bad in ("state=exploded", "limit=0", "limit=501", "before=-1", "limit=ten"):
        with pytest.raises(app.BadRequest):
            app.parse_filters(QueryParams(bad))
