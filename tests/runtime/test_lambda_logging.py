"""In Lambda the project's INFO lines reach the log stream (the runtime leaves the root at WARNING)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from flows.runtime.handler import log_info_in_lambda


@pytest.fixture
def flows_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("flows")
    level = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(level)


def test_flows_logs_info_when_the_function_sets_no_level(flows_logger):
    log_info_in_lambda({"AWS_LAMBDA_FUNCTION_NAME": "runner"})
    assert flows_logger.level == logging.INFO


def test_a_level_chosen_for_the_function_or_for_flows_is_kept(flows_logger):
    log_info_in_lambda({"AWS_LAMBDA_FUNCTION_NAME": "runner", "AWS_LAMBDA_LOG_LEVEL": "WARN"})
    assert flows_logger.level == logging.NOTSET, "Lambda's advanced logging controls decide"
    flows_logger.setLevel(logging.ERROR)
    log_info_in_lambda({"AWS_LAMBDA_FUNCTION_NAME": "runner"})
    assert flows_logger.level == logging.ERROR
