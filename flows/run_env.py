"""What a flow run may change in the function, and where the function may send its Prefect API key.

A run's `env` job variables travel from the worker to the Lambda function and are applied there
for the run's duration. The function holds a Prefect API key and an IAM role, so that env is an
allow-list, never a deny-list: only the pipeline's own run settings (`RUN_SETTING_FIELDS`, e.g.
`QUEST_BLS_SURVEYS`, `QUEST_CONCURRENCY`), matched case-insensitively because pydantic-settings and
Prefect read the environment case-insensitively, with values validated by `flows.settings.Settings`.
Every other name (Prefect settings, proxies, CA bundles, `PYTHONPATH`, `AWS_*`, the store, the
upstream URLs, the contact, the key's secret) is refused and logged. The worker filters what it
sends and the function what it applies, both with `filter_run_env`.

`api_url_problem` is the one rule for the URL that receives the key: `https://`, or plain `http://`
to a loopback host only (tests). The function, the stack config and the work-pool provider use it.

Pure: no I/O, no Prefect, no environment reads.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from flows.settings import Settings, describe_error, env_name

# The settings a run may tune: how much and how fast, never where (store, upstream URLs), who
# (contact), with which key, or the store-integrity guards (lease, stale-upload grace, body cap).
RUN_SETTING_FIELDS = frozenset(
    {
        "bls_surveys",
        "concurrency",
        "max_delete_fraction",
        "max_retire_fraction",
        "retries",
        "retry_delay_seconds",
        "retry_max_delay_seconds",
        "http_timeout_seconds",
        "http_deadline_floor_seconds",
        "http_min_rate_bytes_per_second",
        "multipart_threshold_bytes",
        "multipart_chunk_bytes",
        "continuation_margin_seconds",
    }
)
# The settings only the function's own configuration sets. Every Settings field is in exactly one
# of the two sets (a test checks it), so a new setting is a deliberate decision, refused until made.
FUNCTION_SETTING_FIELDS = frozenset(
    {
        "store",
        "bls_base_url",
        "population_url",
        "contact",
        "lease_seconds",
        "stale_upload_grace_seconds",
        "population_max_bytes",
        "listing_max_bytes",
        # Politeness to BLS is the stack's to set: a run must not loosen it.
        "bls_max_concurrent_requests",
        "bls_requests_per_second",
    }
)

# Lambda's whole environment is 4 KB; a longer value is not a setting.
MAX_VALUE_CHARS = 4096
MAX_NAME_CHARS = 128
SHOWN_NAME_CHARS = 64
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# host[:port] with nothing else: a DNS name, an IPv4 address or a bracketed IPv6 address.
_NETLOC = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
LOOPBACK_HOST_NAMES = frozenset({"localhost"})


def run_env_fields() -> dict[str, str]:
    """Allowed env name → Settings field, for the fields that exist in `Settings` today."""
    return {env_name(f): f for f in sorted(RUN_SETTING_FIELDS) if f in Settings.model_fields}


RUN_ENV_NAMES = frozenset(run_env_fields())


@dataclass(frozen=True)
class Refusal:
    """One env entry not applied: `name` is printable and short.

    The reason quotes a value (escaped, shortened) only for an allowed run setting, whose values
    are not secret; an unknown name's value is never shown.
    """

    name: str
    reason: str

    def message(self) -> str:
        return f"run env {self.name} not applied: {self.reason}"


@dataclass(frozen=True)
class RunEnv:
    """The outcome of filtering a run's env: what to apply (canonical names) and what was refused."""

    accepted: dict[str, str]
    refused: tuple[Refusal, ...]


def shown_name(name: object) -> str:
    """A name safe to log: repr (no newlines or control characters), cut to a few dozen characters."""
    text = repr(name) if isinstance(name, str) else f"<{type(name).__name__} name>"
    return text if len(text) <= SHOWN_NAME_CHARS else f"{text[:SHOWN_NAME_CHARS]}...({len(text)} chars)"


def canonical_name(name: object) -> str | None:
    """The allowed variable `name` stands for (any ASCII case), or None.

    Only ASCII identifiers qualify: `str.upper` maps look-alikes such as dotless `ı` or long `ſ` to
    ASCII letters, so they are refused rather than folded onto an allowed name.
    """
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        return None
    upper = name.upper()
    return upper if upper in RUN_ENV_NAMES else None


def value_problem(field: str, value: object) -> str | None:
    """Why `value` cannot be applied as setting `field`, or None (Settings' own rules and messages)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return f"the value is a {type(value).__name__}, not a string"
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        return f"the value is {len(text)} characters, over {MAX_VALUE_CHARS}"
    if not text.isprintable():
        return "the value contains control, format or surrogate characters (newline, NUL, ...)"
    candidate = Settings.model_construct()
    try:
        Settings.__pydantic_validator__.validate_assignment(candidate, field, text)
    except ValidationError as exc:
        return "; ".join(describe_error(err) for err in exc.errors())
    parsed = getattr(candidate, field)
    if isinstance(parsed, float) and not math.isfinite(parsed):
        return "invalid value: must be a finite number"
    return None


def filter_run_env(env: Mapping[Any, object] | None) -> RunEnv:
    """Split a run's env into the run settings to apply and the refused entries (with reasons).

    A None value means "unset" in Prefect's job variables and is skipped quietly. Each entry is
    judged on its own: one refused entry does not stop the run or the other settings. A setting
    given twice in different case is refused in both spellings (which one wins is not guessable).
    """
    if not env:
        return RunEnv({}, ())
    fields = run_env_fields()
    spellings: dict[str, list[object]] = {}
    refused: list[Refusal] = []
    for name, value in env.items():
        if value is None:
            continue
        canonical = canonical_name(name)
        if canonical is None:
            refused.append(Refusal(shown_name(name), "not a run setting; a run may set only " + accepted()))
        else:
            spellings.setdefault(canonical, []).append(name)
    accepted_env: dict[str, str] = {}
    for canonical, names in spellings.items():
        if len(names) > 1:
            shown = ", ".join(shown_name(n) for n in names)
            refused.append(Refusal(shown, f"{canonical} is given {len(names)} times in different case"))
            continue
        value = env[names[0]]
        problem = value_problem(fields[canonical], value)
        if problem:
            refused.append(Refusal(shown_name(names[0]), problem))
        else:
            accepted_env[canonical] = str(value)
    return RunEnv(accepted_env, tuple(refused))


def accepted() -> str:
    """The allowed names as one line, for messages and the work pool's UI."""
    return ", ".join(sorted(RUN_ENV_NAMES)) + " (any case)"


# --------------------------------------------------------------------------- the key's URL


def is_loopback_host(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 exactly (no `127.0.0.1.evil.com`, no `localhost.evil.com`)."""
    host = host.lower()
    if host in LOOPBACK_HOST_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_url_problem(url: object) -> str | None:
    """Why `url` may not receive the Prefect API key, or None when it may.

    `https://` to any host; plain `http://` only to a loopback host (a local test server), since
    the key travels in a header readable by anyone on the path. URLs whose parse could differ
    between urllib and the HTTP client (whitespace, control characters, backslashes, user@host,
    non-ASCII) are refused outright rather than interpreted.
    """
    if not isinstance(url, str) or not url:
        return "the Prefect API URL is empty"
    if not url.isascii() or not url.isprintable() or " " in url or "\\" in url:
        return "the Prefect API URL contains whitespace, control, non-ASCII or backslash characters"
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return "the Prefect API URL cannot be parsed"
    if "@" in parts.netloc:
        return "the Prefect API URL carries user information (user@host); give the host alone"
    if not _NETLOC.fullmatch(parts.netloc):
        return "the Prefect API URL's host[:port] is malformed"
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        return "the Prefect API URL has an invalid host or port"
    if not host:
        return "the Prefect API URL has no host"
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and is_loopback_host(host)):
        return None
    return "the Prefect API URL must be https:// (plain http:// is accepted only for a loopback host)"
