"""The run-env allow-list and the API-key URL rule (flows/run_env.py): pure, with properties."""

from __future__ import annotations

import itertools
import os
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.run_env import (
    FUNCTION_SETTING_FIELDS,
    MAX_VALUE_CHARS,
    RUN_ENV_NAMES,
    RUN_SETTING_FIELDS,
    api_url_problem,
    canonical_name,
    env_name,
    filter_run_env,
    is_loopback_host,
)
from flows.settings import Settings

CANARY = "VALUE-CANARY-7f3a"

# Names a run must never set, whatever the case (the list and then some).
HOSTILE_NAMES = [
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_PROFILES_PATH",
    "PREFECT_PROFILE",
    "PREFECT_HOME",
    "PREFECT_CLOUD_API_URL",
    "PREFECT_API_TLS_INSECURE_SKIP_VERIFY",
    "PREFECT_API_SSL_CERT_FILE",
    "PREFECT__FLOW_RUN_ID",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PATH",
    "HOME",
    "LAMBDA_TASK_ROOT",
    "_HANDLER",
    "QUEST_STORE",
    "QUEST_CONTACT",
    "QUEST_BLS_BASE_URL",
    "QUEST_POPULATION_URL",
    "QUEST_PREFECT_API_KEY_SECRET_ARN",
    "QUEST_LEASE_SECONDS",
    "QUEST_STALE_UPLOAD_GRACE_SECONDS",
    "QUEST_POPULATION_MAX_BYTES",
    "QUEST_LISTING_MAX_BYTES",
    "QUEST_BLS_MAX_CONCURRENT_REQUESTS",  # politeness to BLS is the stack's, never a run's
    "QUEST_BLS_REQUESTS_PER_SECOND",
    "QUEST_",
    "QUEST_NOT_A_SETTING",
]
VALID_VALUES = {
    "QUEST_BLS_SURVEYS": "pr,cu",
    "QUEST_CONCURRENCY": "8",
    "QUEST_MAX_DELETE_FRACTION": "0.25",
    "QUEST_MAX_RETIRE_FRACTION": "0.2",
    "QUEST_RETRIES": "2",
    "QUEST_RETRY_DELAY_SECONDS": "0.5",
    "QUEST_RETRY_MAX_DELAY_SECONDS": "30",
    "QUEST_HTTP_TIMEOUT_SECONDS": "20",
    "QUEST_HTTP_DEADLINE_FLOOR_SECONDS": "120",
    "QUEST_HTTP_MIN_RATE_BYTES_PER_SECOND": "1024",
    "QUEST_MULTIPART_THRESHOLD_BYTES": str(16 * 1024 * 1024),
    "QUEST_MULTIPART_CHUNK_BYTES": str(16 * 1024 * 1024),
    "QUEST_CONTINUATION_MARGIN_SECONDS": "45",
}


def _case_flips(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.swapcase() if f else c for c, f in zip(name, flips, strict=True))
    )


# --------------------------------------------------------------------------- the allow-list


def test_allow_list_is_derived_from_the_settings_model():
    assert set(Settings.model_fields) >= RUN_SETTING_FIELDS, RUN_SETTING_FIELDS - set(Settings.model_fields)
    assert {env_name(f) for f in RUN_SETTING_FIELDS} == RUN_ENV_NAMES
    assert set(VALID_VALUES) == RUN_ENV_NAMES
    # Pydantic-settings reads `QUEST_<field>`: no alias may make the env name differ.
    assert all(Settings.model_fields[f].validation_alias is None for f in RUN_SETTING_FIELDS)


def test_every_setting_is_classified_run_or_function_only():
    fields = set(Settings.model_fields)
    unclassified = fields - RUN_SETTING_FIELDS - FUNCTION_SETTING_FIELDS
    assert not unclassified, (
        f"new Settings fields {sorted(unclassified)}: add each to RUN_SETTING_FIELDS (a run may tune it) "
        "or FUNCTION_SETTING_FIELDS (only the function's configuration) in flows/run_env.py"
    )
    assert not RUN_SETTING_FIELDS & FUNCTION_SETTING_FIELDS


def test_valid_run_settings_are_applied_under_their_canonical_name():
    result = filter_run_env({k.lower(): v for k, v in VALID_VALUES.items()})
    assert result.refused == ()
    assert result.accepted == VALID_VALUES
    assert filter_run_env({"QUEST_CONCURRENCY": 8, "QUEST_MAX_DELETE_FRACTION": 0.5}).accepted == {
        "QUEST_CONCURRENCY": "8",
        "QUEST_MAX_DELETE_FRACTION": "0.5",
    }
    assert filter_run_env(None).accepted == {} and filter_run_env({}).refused == ()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("spell", [str, str.lower, str.title, lambda n: n[:1].lower() + n[1:]])
def test_other_names_are_refused_in_any_case(name, spell):
    result = filter_run_env({spell(name): f"https://{CANARY}.example/"})
    assert result.accepted == {}
    (refusal,) = result.refused
    assert repr(spell(name)) in refusal.message() and CANARY not in refusal.message()
    assert "not a run setting" in refusal.reason


@pytest.mark.parametrize(
    "name",
    [
        " QUEST_CONCURRENCY",
        "QUEST_CONCURRENCY ",
        "QUEST_CONCURRENCY\n",
        "QUEST_CONCURRENCY\x00",
        "QUEST_CONCURRENCY=1",
        "QUEST_\u200bCONCURRENCY",  # zero-width space
        "QUEST_CONCURRENCY\u00a0",  # no-break space
        "QUEST_RETR\u0131ES",  # dotless i: "ı".upper() == "I"
        "QUEST_BLS_\u017fURVEYS",  # long s: "ſ".upper() == "S"
        "QUEST_CONCURRENCY".replace("C", "\u0421"),  # Cyrillic Es
        "ＱＵＥＳＴ_ＣＯＮＣＵＲＲＥＮＣＹ",  # full-width
        "QUEST_CONCURRENCY" + "_" * 200,
        "X" * 100_000,
        "",
    ],
)
def test_look_alike_and_malformed_names_are_refused(name):
    result = filter_run_env({name: "8"})
    assert result.accepted == {}
    (refusal,) = result.refused
    assert len(refusal.message()) < 700 and "\n" not in refusal.message() and "\x00" not in refusal.message()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUEST_CONCURRENCY", "-1"),
        ("QUEST_CONCURRENCY", "0"),
        ("QUEST_CONCURRENCY", "1000000"),
        ("QUEST_CONCURRENCY", "eight"),
        ("QUEST_CONCURRENCY", ""),
        ("QUEST_CONCURRENCY", True),
        ("QUEST_CONCURRENCY", [8]),
        ("QUEST_CONCURRENCY", {"v": 8}),
        ("QUEST_CONCURRENCY", "8\n"),
        ("QUEST_MAX_DELETE_FRACTION", "1.5"),
        ("QUEST_MAX_DELETE_FRACTION", "nan"),
        ("QUEST_MAX_DELETE_FRACTION", float("nan")),
        ("QUEST_HTTP_TIMEOUT_SECONDS", "inf"),
        ("QUEST_HTTP_TIMEOUT_SECONDS", float("inf")),
        ("QUEST_RETRY_DELAY_SECONDS", "Infinity"),
        ("QUEST_RETRIES", "1e3"),
        ("QUEST_MULTIPART_CHUNK_BYTES", "1024"),
        ("QUEST_BLS_SURVEYS", "pr,../x"),
        ("QUEST_BLS_SURVEYS", ","),
        ("QUEST_BLS_SURVEYS", "pr\nPREFECT_API_URL=http://evil"),
        ("QUEST_BLS_SURVEYS", "pr\x00"),
        ("QUEST_BLS_SURVEYS", "pr\ud800"),
        ("QUEST_BLS_SURVEYS", "pr," * MAX_VALUE_CHARS),
        ("QUEST_BLS_SURVEYS", ["pr", "cu"]),
    ],
)
def test_invalid_values_refuse_that_name_only(name, value):
    result = filter_run_env({name: value, "QUEST_RETRIES": "3"} if name != "QUEST_RETRIES" else {name: value})
    assert name not in result.accepted
    (refusal,) = result.refused
    assert repr(name) in refusal.message()
    if name != "QUEST_RETRIES":
        assert result.accepted == {"QUEST_RETRIES": "3"}  # the run proceeds with the rest


def test_a_setting_given_twice_in_different_case_is_refused():
    result = filter_run_env({"QUEST_CONCURRENCY": "2", "quest_concurrency": "3", "QUEST_RETRIES": "1"})
    assert result.accepted == {"QUEST_RETRIES": "1"}
    (refusal,) = result.refused
    assert "2 times" in refusal.reason


def test_none_means_unset_and_is_skipped_quietly():
    assert filter_run_env({"QUEST_CONCURRENCY": None, "PREFECT_API_URL": None}) == filter_run_env({})


_ALLOWED = st.sampled_from(sorted(RUN_ENV_NAMES)).flatmap(_case_flips)
_HOSTILE = st.sampled_from(HOSTILE_NAMES).flatmap(_case_flips)
_NAMES = st.one_of(
    _ALLOWED,
    _HOSTILE,
    st.text(max_size=40),
    st.builds(
        lambda n, junk: n + junk, _ALLOWED, st.sampled_from([" ", "\n", "\x00", "=x", "\u0131", "\u200b"])
    ),
)
_VALUES = st.one_of(
    st.none(),
    st.sampled_from(list(VALID_VALUES.values())),
    st.text(max_size=60).map(lambda t: t + CANARY),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES, max_size=8))
def test_property_only_valid_run_settings_pass(env):
    result = filter_run_env(env)
    assert set(result.accepted) <= RUN_ENV_NAMES
    for name, value in result.accepted.items():
        assert isinstance(value, str) and value.isprintable() and len(value) <= MAX_VALUE_CHARS
        os.fsencode(name), os.fsencode(value)  # applicable to os.environ: no NUL, no lone surrogate
        field = name.removeprefix("QUEST_").lower()
        Settings.__pydantic_validator__.validate_assignment(Settings.model_construct(), field, value)
    given_names = [n for n, v in env.items() if v is not None]
    # Each given name is applied (under its one canonical spelling) or refused, never both.
    assert len(result.refused) <= len(given_names)
    assert len(result.accepted) + len(result.refused) <= len(given_names)
    for name in given_names:
        if canonical_name(name) is None:
            assert any(repr(name)[:40] in r.name for r in result.refused)
    for refusal in result.refused:
        assert "\n" not in refusal.message() and len(refusal.message()) < 1000
        if "not a run setting" in refusal.reason:
            assert CANARY not in refusal.message()  # an unknown name's value might be a secret


@settings(max_examples=200, deadline=None)
@given(_ALLOWED)
def test_property_any_case_of_an_allowed_name_is_that_name(name):
    canonical = name.upper()
    assert canonical_name(name) == canonical
    assert filter_run_env({name: VALID_VALUES[canonical]}).accepted == {canonical: VALID_VALUES[canonical]}


@settings(max_examples=200, deadline=None)
@given(_HOSTILE)
def test_property_hostile_names_never_pass(name):
    assert canonical_name(name) is None
    assert filter_run_env({name: "1"}).accepted == {}


# --------------------------------------------------------------------------- the key's URL


@pytest.mark.parametrize(
    "url",
    [
        "https://api.prefect.cloud/api/accounts/a/workspaces/w",
        "HTTPS://api.prefect.cloud/api",
        "https://prefect.internal:8443/api",
        "http://127.0.0.1:4200/api",
        "http://127.9.9.9/api",
        "http://localhost:4200/api",
        "HTTP://LOCALHOST:4200/api",
        "http://[::1]:4200/api",
    ],
)
def test_key_urls_accepted(url):
    assert api_url_problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "http://prefect.example/api",
        "HTTP://prefect.example/api",
        "http://127.0.0.1.evil.com/api",
        "http://localhost.evil.com/api",
        "http://localhost./api",
        "http://evil.com#@127.0.0.1/",
        "http://127.0.0.1@evil.com/api",
        "https://evil@127.0.0.1/api",
        "http://user:pw@localhost/api",
        "http://127.0.0.1\\@evil.com/api",
        "http://evil.com\\@127.0.0.1/api",
        "http://127.0.0.1\t.evil.com/api",
        "http://127.0.0.1\n.evil.com/api",
        " http://evil.com/api",
        "http://127.0.0.1 .evil.com/api",
        "http://127.0.0.1%2eevil.com/api",
        "http://ｌｏｃａｌｈｏｓｔ/api",
        "http://0x7f.0.0.1/api",
        "http://2130706433/api",
        "http://[::ffff:10.0.0.1]/api",
        "http://10.0.0.1/api",
        "http://0.0.0.0:4200/api",
        "http://127.0.0.1:99999/api",
        "ftp://127.0.0.1/api",
        "file:///etc/passwd",
        "//127.0.0.1/api",
        "127.0.0.1:4200/api",
        "https:///api",
        "https://",
        "http://[::1/api",
        "http://::1]/api",
        "http://[::1]x/api",
    ],
)
def test_key_urls_refused(url):
    assert api_url_problem(url)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.255.0.9", True), ("::1", True), ("LocalHost", True), ("128.0.0.1", False)],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


_URL_PARTS = (
    ["http", "HTTP", "https", "hTtPs", "ftp", ""],
    ["://", ":/", ":\\\\", "://\t"],
    ["", "user@", "u:p@", "127.0.0.1@", "evil.com@"],
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "evil.com",
        "127.0.0.1.evil.com",
        "localhost.evil.com",
        "[::ffff:7f00:1]",
    ],
    ["", ":4200", ":0", ":x"],
    ["", "\\@evil.com", "#@evil.com", "?@evil.com", "%2eevil.com", "\n.evil.com", "@evil.com", ".", "]"],
    ["", "/api", "/api?x=1"],
)


def test_every_accepted_url_has_the_same_host_for_the_http_client():
    """urllib (the rule) and httpx (Prefect's client) agree on the host of every accepted URL.

    All combinations of scheme, separator, userinfo, host, port and trailing tricks (~100k).
    """
    accepted_http = 0
    for parts in itertools.product(*_URL_PARTS):
        url = "".join(parts)
        if api_url_problem(url) is not None:
            continue
        parsed = httpx.URL(url)
        assert parsed.scheme in ("http", "https") and not parsed.userinfo, url
        assert parsed.host == urlsplit(url).hostname, url
        if parsed.scheme == "http":
            accepted_http += 1
            assert is_loopback_host(parsed.host), url
    assert accepted_http > 50  # the rule still admits the loopback test servers
