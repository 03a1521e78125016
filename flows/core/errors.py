"""Expected failures: the CLI prints their message as one line (no traceback) and exits non-zero."""


class QuestError(Exception):
    """A failure the user can act on; the message says what and where."""


class ConfigError(QuestError, ValueError):
    """A setting is missing or invalid; the message names the setting and says how to fix it.

    Also a ValueError so that a pydantic validator raising it reports it as a value problem.
    """


def one_line(text: str) -> str:
    """`text` on one printable line: line breaks become spaces, other unprintables are escaped.

    Messages quote values users and servers supplied; the CLI promises one line per failure.
    """
    return "".join(c if c.isprintable() else " " if c.isspace() else ascii(c)[1:-1] for c in text).strip()
