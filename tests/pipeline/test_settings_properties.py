"""Property tests: random and hostile settings raise nothing but ConfigError, and what is accepted is sane."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any
from unittest import mock

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.core.errors import ConfigError
from flows.io.store import parse_store_url
from flows.settings import (
    NEUTRAL_CONTACT,
    Settings,
    bucket_problem,
    env_name,
    parse_http_url,
    parse_store,
    requires_contact,
    url_host,
)

FIELDS = sorted(Settings.model_fields)
# Pieces that reach the edges of the rules; mixed with arbitrary text.
FRAGMENTS = [
    "s3://", "S3://", "s3:", "file://", "file:///", "FILE:/", "http://", "HTTPS://", "ftp://", "gs://",
    "localhost", "bucket", "my.bucket", "..", ".", "/", "//", "~", "~root", "%00", "%ff", "%2F", "?", "#",
    "[", "]", "[::1]", ":", ":0", ":99999", "@", "\\", ",", " ", "\t", "\n", "\r", "\x1b", "\x7f",
    "\u2028", "\u00e9", "\uff44", "\u3002", "\udcff", "xn--", "-", "_", "bls.gov", "download.bls.gov",
    "nan", "NaN", "inf", "-inf", "1e309", "-1", "0", "1", "2", "0.5", "1e3", "9" * 30, "",
]  # fmt: skip
# os.environ holds no NUL, and on POSIX only the surrogates that stand for undecodable bytes.
ENV_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
env_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(ENV_CHARS, max_size=8)), max_size=6).map(
    "".join
)
any_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=6).map("".join)
quick = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def quest_env(values: dict[str, str]):
    """os.environ with only these QUEST_* values (the process's own QUEST_* hidden)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("QUEST_")}
    with mock.patch.dict(os.environ, {**clean, **values}, clear=True):
        yield


def check_accepted(s: Settings) -> None:
    """What Settings accepts, the rest of the project can use as it is."""
    assert s.store == parse_store(s.store)  # normalised: a second pass changes nothing
    parsed = parse_store_url(s.store)
    if parsed is not None:
        assert bucket_problem(parsed[0]) is None
    else:
        assert s.store.strip() and s.store.isprintable()
    for url in (s.bls_base_url, s.population_url):
        assert httpx.URL(url).scheme in ("http", "https") and httpx.URL(url).host
    assert s.bls_base_url.endswith("/") and parse_http_url(s.bls_base_url, directory=True) == s.bls_base_url
    assert s.bls_surveys and all(x.isascii() and x.isalnum() and x == x.lower() for x in s.bls_surveys)
    if s.contact is not None:
        httpx.Headers({"User-Agent": s.user_agent("http://127.0.0.1/")})  # a valid header value


def check_refusal(error: ConfigError) -> None:
    message = str(error)
    assert message and message.isprintable()  # one line: no line breaks or control characters
    assert any(env_name(f) in message or f in message for f in FIELDS)


@quick
@given(st.dictionaries(st.sampled_from(FIELDS), env_text, max_size=5))
def test_any_environment_gives_settings_or_one_config_error(values):
    env = {env_name(field): value for field, value in values.items()}
    with quest_env(env):
        try:
            s = Settings()
        except ConfigError as error:
            check_refusal(error)
        else:
            check_accepted(s)


@quick
@given(
    st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(
            any_text,
            st.integers(),
            st.floats(),
            st.none(),
            st.booleans(),
            st.lists(any_text, max_size=3),
            st.dictionaries(any_text, any_text, max_size=2),
        ),
        max_size=4,
    )
)
def test_any_keyword_values_give_settings_or_one_config_error(values: dict[str, Any]):
    with quest_env({}):
        try:
            s = Settings(**values)
        except ConfigError as error:
            check_refusal(error)
        else:
            check_accepted(s)


@quick
@given(any_text)
def test_store_rules_return_a_usable_value_or_refuse(value):
    try:
        store = parse_store(value)
    except ConfigError as error:
        assert str(error).isprintable()
        return
    assert store == parse_store(store)
    assert store.startswith("s3://") == (parse_store_url(store) is not None)


@quick
@given(any_text, st.booleans())
def test_http_urls_are_what_httpx_reads(value, directory):
    try:
        url = parse_http_url(value, directory=directory)
    except ConfigError:
        return
    parsed = httpx.URL(url)
    assert parsed.scheme in ("http", "https")
    # the contact check and the client agree on the host a request goes to
    assert url_host(url) == parsed.host.rstrip(".").lower()


@quick
@given(any_text)
def test_contact_for_any_url_is_neutral_or_asks_for_a_contact(url):
    try:
        assert Settings(contact=None).contact_for(url) == NEUTRAL_CONTACT
    except ConfigError as error:
        assert "QUEST_CONTACT" in str(error) and requires_contact(url_host(url))


labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)


@quick
@given(
    sub=st.lists(labels, max_size=3),
    case=st.lists(st.booleans(), min_size=40, max_size=40),
    dots=st.integers(0, 2),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    user=st.one_of(st.none(), labels),
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
)
def test_every_spelling_of_a_bls_host_needs_a_contact(sub, case, dots, port, user, scheme):
    host = ".".join([*sub, "bls", "gov"])
    host = "".join(c.upper() if up else c for c, up in zip(host, case + [False] * len(host), strict=False))
    netloc = (f"{user}@" if user else "") + host + "." * dots + (f":{port}" if port else "")
    url = f"{scheme}://{netloc}/pub/time.series/"
    assert requires_contact(url_host(url))
    try:
        Settings(contact=None).contact_for(url)
    except ConfigError as error:
        assert "QUEST_CONTACT" in str(error)
    else:
        raise AssertionError(f"no contact asked for {url}")


@quick
@given(st.lists(labels, min_size=1, max_size=3))
def test_look_alike_hosts_are_not_bls(parts):
    for host in (".".join(parts) + "bls.gov", "bls.gov." + ".".join(parts), "bls-gov." + parts[0]):
        if host.rstrip(".") == "bls.gov" or host.endswith(".bls.gov"):
            continue
        assert not requires_contact(url_host(f"https://{host}/"))
