"""The error base every expected failure shares, and the one-line rule for messages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flows.core.errors import ConfigError, QuestError, one_line


def test_config_errors_are_expected_failures_and_value_errors():
    assert issubclass(ConfigError, QuestError) and issubclass(ConfigError, ValueError)


def test_one_line_flattens_breaks_and_escapes_the_rest():
    assert one_line("a\nb\r\nc") == "a b  c"
    assert one_line("x\x00y\x1b[2J") == "x\\x00y\\x1b[2J"
    assert one_line("  padded\t") == "padded"


@given(st.text())
def test_one_line_is_always_one_printable_line(text):
    line = one_line(text)
    assert "\n" not in line and "\r" not in line and line.isprintable()
