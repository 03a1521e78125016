"""The one settings object. Nothing else in the project reads `os.environ` for QUEST_* values.

Built once at the edge (CLI, Lambda handler, flow entry) and passed down: explicitly to tasks and
helpers, and to flows through `use_settings` (a flow's parameters are what a deployment and the UI
show, so settings do not travel as one). `current_settings()` at a flow's entry returns the edge's
object, or builds it there when the flow run is its own edge (a deployment run). AWS settings are
boto3's own (`AWS_ENDPOINT_URL`, `AWS_REGION`, the credentials chain) and are not duplicated here.

Every value is understood or refused here, once: a bad value raises `ConfigError` (one line naming
the environment variable), never a pydantic traceback, and never becomes a surprising default such
as a local directory named `S3:` or the current directory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from flows import __version__
from flows.core.errors import ConfigError, one_line
from flows.core.listing import DEFAULT_MAX_LISTING_BYTES
from flows.core.names import (
    ALL_SURVEYS,
    BLS_MAX_CONCURRENT_REQUESTS_DEFAULT,
    BLS_REQUESTS_PER_SECOND_DEFAULT,
    CONTINUATION_MARGIN_SECONDS,
    ENV_PREFIX,
    PROJECT,
)
from flows.core.population import DEFAULT_MAX_BYTES

__all__ = ["ConfigError", "Settings", "current_settings", "use_settings"]

DEFAULT_BLS_BASE_URL = "https://download.bls.gov/pub/time.series/"
DEFAULT_POPULATION_URL = (
    "https://honolulu-api.datausa.io/tesseract/data.jsonrecords"
    "?cube=acs_yg_total_population_1&drilldowns=Year%2CNation&locale=en&measures=Population"
)
# Domains that refuse anonymous clients (the domain and every subdomain): a real run against
# them needs QUEST_CONTACT.
CONTACT_REQUIRED_DOMAINS = frozenset({"bls.gov"})
NEUTRAL_CONTACT = "https://example.invalid/quest-local-run"

STORE_FORMS = "s3://BUCKET[/PREFIX] or a directory path"
MAX_STORE_CHARS = 4096  # PATH_MAX on Linux
MAX_URL_CHARS = 2048
MAX_CONTACT_CHARS = 256  # it goes into every User-Agent header
MAX_SURVEYS = 100  # BLS publishes about 60
MAX_SURVEY_CHARS = 32
_GIB = 1024**3
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_SURVEY = re.compile(r"[a-z0-9]+")
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", allow_inf_nan=False)

    store: str = Field("./data", description="s3://BUCKET[/PREFIX] or a local directory")
    bls_base_url: str = DEFAULT_BLS_BASE_URL
    bls_surveys: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["pr"])
    population_url: str = DEFAULT_POPULATION_URL
    contact: str | None = Field(None, description="email or URL put into the User-Agent")

    concurrency: int = Field(4, ge=1, le=64)
    max_delete_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # Share of the stored surveys one run may retire (remove as gone upstream); tighter than files.
    max_retire_fraction: float = Field(0.1, ge=0.0, le=1.0)
    retries: int = Field(4, ge=0, le=20)
    # Upper bounds keep sleeps and socket timeouts within what the OS accepts (no OverflowError).
    retry_delay_seconds: float = Field(1.0, ge=0.0, le=3600, description="base of the exponential backoff")
    retry_max_delay_seconds: float = Field(60.0, ge=0.0, le=86400)
    http_timeout_seconds: float = Field(60.0, gt=0, le=86400)
    # Overall deadline of one request (not only between reads): a floor, plus the size divided by
    # the slowest transfer rate we accept, so a peer trickling 1 byte/s cannot hold a run forever.
    http_deadline_floor_seconds: float = Field(60.0, gt=0, le=86400)
    http_min_rate_bytes_per_second: float = Field(256 * 1024, gt=0)
    # S3 limits: one PUT and one multipart part hold at most 5 GiB, a part at least 5 MiB.
    multipart_threshold_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * _GIB)
    multipart_chunk_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * _GIB)
    # Two syncs of one store must not interleave: a lease in the store, renewed while a sync runs,
    # taken over by another sync only once it has expired (a killed sync cannot renew it).
    lease_seconds: float = Field(300.0, ge=5, le=86400)
    # What a killed sync left behind (open multipart uploads, temp files) is removed by a later
    # sync once it is older than this, so a sync still running elsewhere is never disturbed.
    stale_upload_grace_seconds: float = Field(6 * 3600.0, ge=0, le=365 * 86400)
    # The real DataUSA body is about 1.3 KB; anything far larger is not a population response.
    population_max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1024, le=256 * 1024 * 1024)
    # A survey or root listing is read whole, so its decoded bytes are capped too: BLS's `pr` listing
    # is about 3 KB, the root about 10 KB, the largest survey listings a few hundred rows.
    listing_max_bytes: int = Field(DEFAULT_MAX_LISTING_BYTES, ge=16 * 1024, le=256 * 1024 * 1024)
    # Politeness to BLS across every invocation at once (Prefect global concurrency limits when
    # the API has them, the same numbers in-process otherwise): requests in flight, requests/s.
    bls_max_concurrent_requests: int = Field(BLS_MAX_CONCURRENT_REQUESTS_DEFAULT, ge=1, le=64)
    bls_requests_per_second: float = Field(BLS_REQUESTS_PER_SECOND_DEFAULT, gt=0, le=1000)
    # A survey mirror in Lambda stops starting transfers this long before its time is up and
    # continues in a follow-up flow run (covers the transfers in flight and the final flush).
    continuation_margin_seconds: float = Field(CONTINUATION_MARGIN_SECONDS, ge=1, le=3600)

    def __init__(self, **values: Any) -> None:
        """Like BaseSettings, but a bad value raises one ConfigError line instead of a ValidationError.

        Done here rather than by each caller so that every `Settings()` in the project (CLI,
        Lambda handler, flows) reports configuration mistakes the same way.
        """
        overrides = frozenset(k for k in values if not k.startswith("_"))
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc.errors(), overrides)) from None
        except SettingsError as exc:  # a value the env source itself could not decode
            raise ConfigError(one_line(str(exc))) from None

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: object) -> object:
        return parse_store(value) if isinstance(value, str) else value

    @field_validator("bls_base_url", mode="before")
    @classmethod
    def _base_url(cls, value: object) -> object:
        return parse_http_url(value, directory=True) if isinstance(value, str) else value

    @field_validator("population_url", mode="before")
    @classmethod
    def _population_url(cls, value: object) -> object:
        return parse_http_url(value, directory=False) if isinstance(value, str) else value

    @field_validator("bls_surveys", mode="before")
    @classmethod
    def _split_surveys(cls, value: object) -> object:
        return parse_surveys(value) if isinstance(value, str | list | tuple) else value

    @field_validator("contact", mode="before")
    @classmethod
    def _contact(cls, value: object) -> object:
        return parse_contact(value) if isinstance(value, str) else value

    @property
    def discover_surveys(self) -> bool:
        """`QUEST_BLS_SURVEYS=all`: the surveys are the folders of the `time.series/` root listing."""
        return self.bls_surveys == [ALL_SURVEYS]

    def survey_url(self, survey: str) -> str:
        return f"{self.bls_base_url}{survey}/"

    def user_agent(self, url: str) -> str:
        """User-Agent naming a contact; BLS answers 403 to clients without one."""
        return f"{PROJECT}/{__version__} (+{self.contact_for(url)})"

    def contact_for(self, url: str) -> str:
        """The contact for requests to `url`; refuses early (with the fix) where a host would refuse us."""
        if self.contact:
            return self.contact
        host = url_host(url)
        if requires_contact(host):
            raise ConfigError(
                f"{host} refuses clients whose User-Agent names no contact: set QUEST_CONTACT "
                "to your email or project URL, e.g. `export QUEST_CONTACT=you@example.com`"
            )
        return NEUTRAL_CONTACT

    def check_contacts(self, surveys: Iterable[str] = (), *, population: bool = False) -> None:
        """Fail before anything starts (no lease, no request), with the fix, where a host would refuse us."""
        for survey in surveys:
            self.contact_for(self.survey_url(survey))
        if population:
            self.contact_for(self.population_url)


_CURRENT: ContextVar[Settings | None] = ContextVar("quest_settings", default=None)


@contextlib.contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Flows (and their subflows) called inside this block use `settings` instead of rebuilding them."""
    token = _CURRENT.set(settings)
    try:
        yield settings
    finally:
        _CURRENT.reset(token)


def current_settings() -> Settings:
    """The settings the edge built; a flow run that is its own edge (a deployment run) builds them."""
    return _CURRENT.get() or Settings()


# --- error messages ---------------------------------------------------------------------------


def env_name(field: str) -> str:
    """The environment variable a field is read from, which is what the user wrote."""
    return f"{ENV_PREFIX}{field.upper()}"


def shown(value: object, limit: int = 60) -> str:
    """A value quoted for a message: escaped (so it cannot break the line) and shortened."""
    text = ascii(value) if isinstance(value, str) else ascii(str(value))
    return text if len(text) <= limit else text[: limit - 5] + "...'"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounds(field: str) -> str | None:
    """'between 1 and 64' / '>= 1' / '> 0' from the field's declared constraints."""
    info = Settings.model_fields.get(field)
    if info is None:
        return None
    limits = {k: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
    if "ge" in limits and "le" in limits:
        return f"between {_number(limits['ge'])} and {_number(limits['le'])}"
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = [f"{ops[k]} {_number(v)}" for k, v in limits.items()]
    return " and ".join(parts) or None


_KINDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing_size": "a whole number of sensible size",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number (not nan or inf)",
    "string_type": "text",
    "list_type": "a comma-separated list",
}
_BOUND_KINDS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def describe_error(error: ErrorDetails, overrides: Iterable[str] = ()) -> str:
    """One problem as `QUEST_X must be ..., got '...'` (the field name for an explicit override)."""
    field = str(error["loc"][0]) if error["loc"] else "settings"
    name = field if field in set(overrides) or not error["loc"] else env_name(field)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        return f"{name}: {ctx['error']}"
    if kind in _BOUND_KINDS:
        rule = _bounds(field) or error["msg"].removeprefix("Input should be ")
        return f"{name} must be {rule}, got {shown(error['input'])}"
    if kind in _KINDS:
        return f"{name} must be {_KINDS[kind]}, got {shown(error['input'])}"
    return f"{name}: {error['msg']} (got {shown(error['input'])})"


def describe_errors(errors: Iterable[ErrorDetails], overrides: Iterable[str] = ()) -> str:
    """All problems of one ValidationError on one line, so the user fixes them in one go."""
    keep = frozenset(overrides)
    return one_line("; ".join(describe_error(e, keep) for e in errors))


# --- the rules (pure: each takes the raw text and returns the value or raises ConfigError) --------


def _printable(value: str) -> None:
    for i, c in enumerate(value):
        if not c.isprintable():
            raise ConfigError(
                f"{shown(value)} holds the unprintable character U+{ord(c):04X} at position {i}"
            )


def parse_store(value: str) -> str:
    """Normalise QUEST_STORE to `s3://bucket[/prefix]` or a directory path; refuse anything else.

    Scheme case is ignored (`S3://b` is S3); `file:///path` is that path; other schemes, an empty
    value (which would silently be the current directory) and `scheme:` look-alikes are refused.
    """
    if not value.strip():
        raise ConfigError(f"is empty: set it to {STORE_FORMS} (the default is ./data)")
    if value != value.strip():
        raise ConfigError(f"has leading or trailing whitespace: {shown(value)}")
    _printable(value)
    if len(value) > MAX_STORE_CHARS:
        raise ConfigError(f"is {len(value)} characters long; at most {MAX_STORE_CHARS}")
    match = _SCHEME.match(value)
    if match is None:
        return _local_path(value)
    scheme, rest = match.group(1).lower(), value[match.end() :]
    if scheme == "s3":
        return _s3_url(rest, value)
    if scheme == "file":
        return _file_url(rest, value)
    hint = "" if "://" in value else f" (for a directory of that name write ./{value})"
    raise ConfigError(f"{shown(value)} has the unsupported scheme {scheme!r}: use {STORE_FORMS}{hint}")


def _local_path(value: str) -> str:
    path = os.path.expanduser(value) if value.startswith("~") else value
    if path.startswith("~"):
        raise ConfigError(f"{shown(value)}: cannot expand the home directory of that user")
    return path


def _s3_url(rest: str, value: str) -> str:
    if not rest.startswith("//"):
        raise ConfigError(f"{shown(value)} is not an S3 URL: write s3://BUCKET[/PREFIX]")
    bucket, _, prefix = rest[2:].partition("/")
    if not bucket:
        raise ConfigError(f"{shown(value)} names no bucket: write s3://BUCKET[/PREFIX]")
    problem = bucket_problem(bucket)
    if problem:
        raise ConfigError(f"S3 bucket name {shown(bucket)} breaks S3's naming rules: {problem}")
    segments = [s for s in prefix.split("/") if s]
    return f"s3://{bucket}/{'/'.join(segments)}" if segments else f"s3://{bucket}"


_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_problem(name: str) -> str | None:
    """The S3 general-purpose bucket naming rule `name` breaks, or None when it is a valid name."""
    if not 3 <= len(name) <= 63:
        return f"a name is 3 to 63 characters long, this one {len(name)}"
    if re.fullmatch(r"[a-z0-9.-]+", name) is None:
        return "a name holds only lowercase letters, digits, dots and hyphens"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "a name begins and ends with a letter or digit"
    if ".." in name:
        return "a name has no two adjacent dots"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        return "a name is not formatted as an IP address"
    for start in _BUCKET_PREFIXES:
        if name.startswith(start):
            return f"a name does not begin with {start!r}"
    for end in _BUCKET_SUFFIXES:
        if name.endswith(end):
            return f"a name does not end with {end!r}"
    return None


def _file_url(rest: str, value: str) -> str:
    parts = urlsplit("file:" + rest)
    if parts.query or parts.fragment:
        raise ConfigError(f"{shown(value)}: percent-encode '?' and '#' in a file URL (%3F, %23)")
    if parts.netloc.lower() not in ("", "localhost"):
        raise ConfigError(
            f"{shown(value)} names the host {shown(parts.netloc)}: only local files work, "
            "write file:///PATH or the path itself"
        )
    path = unquote(parts.path, errors="surrogateescape")
    if not path.startswith("/"):
        raise ConfigError(f"{shown(value)} names no absolute path: write file:///PATH")
    return parse_store(path)  # the decoded path obeys the rules of a path given as such


def parse_http_url(value: str, *, directory: bool) -> str:
    """An http(s) URL with a host, as the HTTP client will read it; `directory` ones end with '/'.

    Refused: other schemes, no scheme, no host, a bad port, whitespace, control and non-ASCII
    characters (percent-encode them, or use the punycode host), and for a directory URL a query or
    fragment (survey names are appended to it).
    """
    if not value:
        raise ConfigError("is empty: set an http:// or https:// URL")
    for i, c in enumerate(value):
        if not " " < c < "\x7f" or c == "\\":
            raise ConfigError(
                f"{shown(value)} holds {ascii(c)} at position {i}: a URL here is printable ASCII without "
                "spaces or backslashes (percent-encode the rest)"
            )
    if len(value) > MAX_URL_CHARS:
        raise ConfigError(f"is {len(value)} characters long; at most {MAX_URL_CHARS}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{shown(value)} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        got = f"the scheme {scheme!r}" if scheme else "no scheme"
        raise ConfigError(f"{shown(value)} has {got}: use an http:// or https:// URL")
    host = parts.hostname or ""
    problem = host_problem(host, bracketed="[" in parts.netloc)
    if problem:
        raise ConfigError(f"{shown(value)}: {problem}")
    if port == 0:
        raise ConfigError(f"{shown(value)}: port 0 is not a port a server listens on")
    if directory and (parts.query or parts.fragment or value.endswith(("?", "#"))):
        raise ConfigError(f"{shown(value)}: a base URL takes no query or fragment (surveys are appended)")
    url = scheme + value[len(parts.scheme) :]
    return url if not directory or url.endswith("/") else url + "/"


def host_problem(host: str, *, bracketed: bool = False) -> str | None:
    """Why `host` (already lowercased by urlsplit) is no host name or IP address, or None."""
    if not host:
        return "names no host"
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{shown(host)} is not an IPv6 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return f"{shown(host)} is not a host name (labels of letters, digits and hyphens, up to 63 each)"
    return None


def parse_contact(value: str) -> str | None:
    """The contact put into the User-Agent, or None when unset/blank.

    A header value must be one line of ASCII: a newline would split the request (and httpx raises
    on non-ASCII), so those are refused here instead of failing mid-run.
    """
    text = value.strip(" ")
    if not text:
        return None
    for i, c in enumerate(text):
        if not " " <= c < "\x7f":
            raise ConfigError(
                f"holds {ascii(c)} at position {i}: the contact goes into an HTTP header, so it is one "
                "line of printable ASCII (e.g. you@example.com or https://example.com/you)"
            )
    if len(text) > MAX_CONTACT_CHARS:
        raise ConfigError(f"is {len(text)} characters long; at most {MAX_CONTACT_CHARS}")
    return text


def parse_surveys(value: str | list[Any] | tuple[Any, ...], source: str | None = None) -> list[str]:
    """Survey names from `pr,ce` or a list: lowercase ASCII letters and digits, deduplicated in order.

    `source` (e.g. `--survey`) prefixes the message when the names did not come from the env.
    """
    parts = value.split(",") if isinstance(value, str) else [str(s) for s in value]
    surveys = list(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    prefix = f"{source}: " if source else ""
    if not surveys:
        raise ConfigError(f"{prefix}at least one survey is required, e.g. pr")
    if len(surveys) > MAX_SURVEYS:
        raise ConfigError(f"{prefix}{len(surveys)} surveys; at most {MAX_SURVEYS}")
    if ALL_SURVEYS in surveys and len(surveys) > 1:
        raise ConfigError(f"{prefix}`{ALL_SURVEYS}` means every survey: use it alone, not with other names")
    for survey in surveys:
        if not (_SURVEY.fullmatch(survey) and len(survey) <= MAX_SURVEY_CHARS):
            raise ConfigError(
                f"{prefix}survey names are ASCII letters and digits (at most {MAX_SURVEY_CHARS}), "
                f"got {shown(survey)}"
            )
    return surveys


def url_host(url: str) -> str:
    """The host a request to `url` goes to, normalised for comparison.

    Lowercase, without userinfo, port or trailing dots, IDNA-mapped (so full-width letters and
    ideographic dots compare as ASCII); '' when there is none.
    """
    try:
        parts = urlsplit(url if "//" in url else "//" + url)
        host = parts.hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    with contextlib.suppress(UnicodeError):  # not IDNA-encodable: compare as it is
        host = host.encode("idna").decode("ascii")
    return host.lower().rstrip(".")


def requires_contact(host: str) -> bool:
    """True for a host in a domain that refuses anonymous clients (the domain or any subdomain)."""
    return any(host == d or host.endswith("." + d) for d in CONTACT_REQUIRED_DOMAINS)
