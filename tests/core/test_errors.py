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


def test_every_error_lives_in_the_one_errors_module():
    """Exceptions are defined in flows/core/errors.py only, each under QuestError (one place to read)."""
    import ast
    import builtins
    import inspect
    from pathlib import Path

    from flows.core import errors

    root = Path(errors.__file__).resolve().parents[1]

    def exceptions(namespace: dict) -> set[str]:
        return {n for n, v in namespace.items() if inspect.isclass(v) and issubclass(v, BaseException)}

    # An interruption is not a failure: `flows.signals.Stopped` (a KeyboardInterrupt) stays with the
    # CLI, `flows.runtime.watch.LambdaTimeLimit` (a direct BaseException, like a signal) with the
    # deadline that raises it.
    exception_names = (exceptions(vars(builtins)) | exceptions(vars(errors))) - {
        "KeyboardInterrupt",
        "BaseException",
    }
    elsewhere = []
    for path in root.rglob("*.py"):
        if path == Path(errors.__file__).resolve() or "devkit" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & exception_names:
                    elsewhere.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}")
    assert not elsewhere, elsewhere
    for name, value in vars(errors).items():
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, QuestError), name
            assert name in (errors.__doc__ or ""), f"{name} is missing from the hierarchy in the docstring"
