"""The rules of one Lambda invocation running one flow run: log link, time budget, who may start."""

from __future__ import annotations

import pytest

from flows.core.invocation import (
    MIN_RUN_SECONDS,
    cancelled_message,
    console_escape,
    console_url,
    limit_message,
    limit_seconds,
    run_timeout,
    start_refusal,
    too_late_message,
    where_the_logs_are,
)


def test_console_escaping_is_the_consoles():
    assert console_escape("/aws/lambda/quest-dev-runner") == "$252Faws$252Flambda$252Fquest-dev-runner"
    stream = "2025$252F01$252F02$252F$255B$2524LATEST$255D0123abcd"
    assert console_escape("2025/01/02/[$LATEST]0123abcd") == stream


def test_console_url():
    url = console_url("eu-west-1", "/aws/lambda/f", "2025/01/02/[$LATEST]ab")
    assert url == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#logsV2:log-groups/log-group/$252Faws$252Flambda$252Ff/log-events/"
        "2025$252F01$252F02$252F$255B$2524LATEST$255Dab"
    )


def test_the_log_line_names_request_group_stream_and_link():
    line = where_the_logs_are("req-1", "/aws/lambda/f", "s/[1]", "us-east-1")
    assert "req-1" in line and "/aws/lambda/f" in line and "s/[1]" in line
    assert "https://us-east-1.console.aws.amazon.com/" in line
    assert "https://" not in where_the_logs_are("req-1", "/aws/lambda/f", "s", None)  # no region, no link


@pytest.mark.parametrize(
    ("configured", "remaining", "expected"),
    [("600", 599.2, 600), (None, 599.2, 600), ("", 12.01, 13), ("junk", 3.0, 3), ("0", 0.2, 1)],
)
def test_the_limit_named(configured, remaining, expected):
    assert limit_seconds(configured, remaining) == expected


def test_the_run_timeout_ends_the_margin_before_the_deadline():
    assert run_timeout(600, 15, None) == 585
    assert run_timeout(600, 15, 100) == 100  # the flow's own, shorter timeout stays
    assert run_timeout(600, 15, 900) == 585  # never longer than the deadline allows
    assert run_timeout(15 + MIN_RUN_SECONDS, 15, None) == MIN_RUN_SECONDS
    assert run_timeout(15.5, 15, None) is None  # too little time to start


def test_messages():
    assert limit_message(600, "r-1", 15) == (
        "Lambda time limit 600 s reached (request r-1): stopped 15 s before Lambda would have killed "
        "the invocation"
    )
    assert "not started" in too_late_message(600, "r-1", 14.2, 15) and "14.2 s left" in too_late_message(
        600, "r-1", 14.2, 15
    )
    assert "Lambda request r-1" in cancelled_message("r-1")


@pytest.mark.parametrize(
    ("state", "pid", "request_id", "starts"),
    [
        ("SCHEDULED", None, "r1", True),
        ("PENDING", "", "r1", True),
        ("PENDING", "r1", "r1", True),
        ("PENDING", "r0", "r1", False),  # another invocation's run
        ("PENDING", "r0", None, True),  # a local caller: only the state counts
        ("RUNNING", "r1", "r1", False),  # a second delivery while the first runs it
        ("COMPLETED", "r1", "r1", False),  # ... or after it finished
        ("CRASHED", None, "r1", False),
        (None, None, "r1", False),
    ],
)
def test_who_may_start_the_run(state, pid, request_id, starts):
    assert (start_refusal(state, pid, request_id) is None) is starts
