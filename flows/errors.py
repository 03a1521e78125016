"""Expected failures: the CLI prints their message as one line (no traceback) and exits non-zero."""


class QuestError(Exception):
    """A failure the user can act on; the message says what and where."""
