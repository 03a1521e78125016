"""Settings: every value is understood or refused with one ConfigError line naming the variable."""

from __future__ import annotations

import os

import pytest

from flows.core.errors import ConfigError, QuestError
from flows.io.store import parse_store_url
from flows.settings import NEUTRAL_CONTACT, Settings, bucket_problem, parse_store, url_host


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("QUEST_"):
            monkeypatch.delenv(name)


def settings_from(monkeypatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def refused(monkeypatch, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from(monkeypatch, **env)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


# --- QUEST_STORE ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "store"),
    [
        ("S3://bucket", "s3://bucket"),
        ("s3://bucket/", "s3://bucket"),
        ("s3://my.bucket-1/a//b/", "s3://my.bucket-1/a/b"),
        ("sS3://bucket"[1:], "s3://bucket"),
        ("file:///tmp/quest%20data", "/tmp/quest data"),
        ("FILE://localhost/srv/data", "/srv/data"),
        ("file:/srv/data", "/srv/data"),
        ("data", "data"),
        ("./S3:/bucket", "./S3:/bucket"),  # explicitly a directory, so kept
        ("/var/lib/quest", "/var/lib/quest"),
        (".", "."),
    ],
)
def test_store_is_normalised(monkeypatch, value, store):
    settings = settings_from(monkeypatch, QUEST_STORE=value)
    assert settings.store == store
    # the store module (which knows only lowercase s3://) reads the normalised value right
    assert (parse_store_url(settings.store) is None) == (not store.startswith("s3://"))


def test_store_home_is_expanded(monkeypatch):
    monkeypatch.setenv("HOME", "/home/quest")
    assert settings_from(monkeypatch, QUEST_STORE="~/data").store == "/home/quest/data"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (" ./data", "whitespace"),
        ("file://server/share", "names the host 'server'"),
        ("file://", "no absolute path"),
        ("file:relative", "no absolute path"),
        ("file:///tmp/a%0Ab", "U+000A"),
        ("file:///tmp/?x", "percent-encode"),
        ("http://example.com/data", "unsupported scheme 'http'"),
        ("gs://bucket", "unsupported scheme 'gs'"),
        ("S3A://bucket", "unsupported scheme 's3a'"),
        ("s3:bucket", "write s3://BUCKET"),
        ("s3:/bucket", "write s3://BUCKET"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("c:data", "unsupported scheme 'c'"),
        ("./data\n", "whitespace"),
        ("./da\nta", "U+000A"),
        ("data\x7f", "U+007F"),
        ("dat\u2028a", "U+2028"),
        ("s3://MyBucket", "lowercase"),
    ],
)
def test_store_refused(monkeypatch, value, needle):
    message = refused(monkeypatch, QUEST_STORE=value)
    assert message.startswith("QUEST_STORE: ") and needle in message


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("ab", "3 to 63"),
        ("a" * 64, "3 to 63"),
        ("my_bucket", "lowercase letters, digits, dots and hyphens"),
        ("Bucket", "lowercase letters"),
        ("-bucket", "begins and ends"),
        ("bucket.", "begins and ends"),
        ("my..bucket", "adjacent dots"),
        ("192.168.5.4", "IP address"),
        ("xn--bucket", "'xn--'"),
        ("sthree-bucket", "'sthree-'"),
        ("bucket-s3alias", "'-s3alias'"),
        ("bucket--ol-s3", "'--ol-s3'"),
        ("bucket.mrap", "'.mrap'"),
    ],
)
def test_bucket_naming_rules_are_named(name, rule):
    assert rule in (bucket_problem(name) or "")
    with pytest.raises(ConfigError, match="naming rules"):
        parse_store(f"s3://{name}/x")


@pytest.mark.parametrize("name", ["abc", "a" * 63, "quest-data", "my.bucket.1", "1bucket", "quest-test"])
def test_valid_bucket_names(name):
    assert bucket_problem(name) is None
    assert parse_store(f"S3://{name}") == f"s3://{name}"


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("https://download.bls.gov/pub/time.series", "https://download.bls.gov/pub/time.series/"),
        ("HTTP://127.0.0.1:8080/pub/", "http://127.0.0.1:8080/pub/"),
        ("http://[::1]:9000/x/", "http://[::1]:9000/x/"),
    ],
)
def test_base_url_accepted(monkeypatch, value, url):
    assert settings_from(monkeypatch, QUEST_BLS_BASE_URL=value).bls_base_url == url


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("QUEST_BLS_BASE_URL", "ftp://download.bls.gov/pub/", "scheme 'ftp'"),
        ("QUEST_BLS_BASE_URL", "file:///srv/bls/", "scheme 'file'"),
        ("QUEST_BLS_BASE_URL", "download.bls.gov/pub/", "no scheme"),
        ("QUEST_BLS_BASE_URL", "https:///pub/", "no host"),
        ("QUEST_BLS_BASE_URL", "https://download bls.gov/", "' '"),
        ("QUEST_BLS_BASE_URL", "https://download.bls.gov/\n", "'\\n'"),
        ("QUEST_BLS_BASE_URL", "https://h\u00f6st/", "'\\xf6'"),
        ("QUEST_BLS_BASE_URL", "https://host:99999/", "not a valid URL"),
        ("QUEST_BLS_BASE_URL", "https://host:0/", "port 0"),
        ("QUEST_BLS_BASE_URL", "https://host/pub/?x=1", "no query"),
        ("QUEST_BLS_BASE_URL", "https://[::1/", "not a valid URL"),
        ("QUEST_BLS_BASE_URL", "https://a..b/", "not a host name"),
        ("QUEST_BLS_BASE_URL", "", "is empty"),
        ("QUEST_POPULATION_URL", "ftp://datausa.io/api", "scheme 'ftp'"),
        ("QUEST_POPULATION_URL", "datausa.io/api/data", "no scheme"),
        ("QUEST_POPULATION_URL", "https://host\\@evil/", "backslash"),
        ("QUEST_POPULATION_URL", "x" * 3000, "at most 2048"),
    ],
)
def test_urls_refused(monkeypatch, var, value, needle):
    message = refused(monkeypatch, **{var: value})
    assert message.startswith(f"{var}: ") and needle in message


def test_population_url_keeps_its_query(monkeypatch):
    url = "https://example.com/api?cube=x&drilldowns=Year%2CNation"
    assert settings_from(monkeypatch, QUEST_POPULATION_URL=url).population_url == url


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("QUEST_CONCURRENCY", "-1", "QUEST_CONCURRENCY must be between 1 and 64, got '-1'"),
        ("QUEST_CONCURRENCY", "0", "QUEST_CONCURRENCY must be between 1 and 64, got '0'"),
        ("QUEST_CONCURRENCY", "2.5", "QUEST_CONCURRENCY must be a whole number, got '2.5'"),
        ("QUEST_CONCURRENCY", "9" * 40, "QUEST_CONCURRENCY must be between 1 and 64"),
        ("QUEST_MAX_DELETE_FRACTION", "2", "QUEST_MAX_DELETE_FRACTION must be between 0 and 1, got '2'"),
        ("QUEST_MAX_DELETE_FRACTION", "nan", "QUEST_MAX_DELETE_FRACTION must be a finite number"),
        ("QUEST_MAX_DELETE_FRACTION", "NaN", "QUEST_MAX_DELETE_FRACTION must be a finite number"),
        ("QUEST_RETRIES", "abc", "QUEST_RETRIES must be a whole number, got 'abc'"),
        ("QUEST_RETRIES", "", "QUEST_RETRIES must be a whole number, got ''"),
        ("QUEST_RETRY_MAX_DELAY_SECONDS", "inf", "QUEST_RETRY_MAX_DELAY_SECONDS must be a finite number"),
        ("QUEST_RETRY_MAX_DELAY_SECONDS", "-inf", "QUEST_RETRY_MAX_DELAY_SECONDS must be a finite number"),
        ("QUEST_RETRY_MAX_DELAY_SECONDS", "1e300", "QUEST_RETRY_MAX_DELAY_SECONDS must be between 0 and"),
        ("QUEST_HTTP_TIMEOUT_SECONDS", "0", "QUEST_HTTP_TIMEOUT_SECONDS must be > 0 and <= 86400, got '0'"),
        ("QUEST_HTTP_MIN_RATE_BYTES_PER_SECOND", "0", "QUEST_HTTP_MIN_RATE_BYTES_PER_SECOND must be > 0"),
        ("QUEST_MULTIPART_CHUNK_BYTES", "1024", "QUEST_MULTIPART_CHUNK_BYTES must be between 5242880 and"),
        ("QUEST_MULTIPART_THRESHOLD_BYTES", str(6 * 1024**3), "QUEST_MULTIPART_THRESHOLD_BYTES must be"),
        ("QUEST_LEASE_SECONDS", "1", "QUEST_LEASE_SECONDS must be between 5 and 86400, got '1'"),
    ],
)
def test_numbers_refused_naming_the_variable(monkeypatch, var, value, expected):
    message = refused(monkeypatch, **{var: value})
    assert message.startswith(expected)


def test_every_problem_is_reported_on_one_line(monkeypatch):
    message = refused(monkeypatch, QUEST_CONCURRENCY="-1", QUEST_RETRIES="x", QUEST_STORE="")
    assert message.count(";") == 2
    assert all(v in message for v in ("QUEST_CONCURRENCY", "QUEST_RETRIES", "QUEST_STORE"))


def test_plain_constructor_raises_config_error_not_validation_error():
    """Every caller of Settings() gets the project's error, so nothing needs to wrap it."""
    with pytest.raises(ConfigError) as info:
        Settings(concurrency=-1)
    assert isinstance(info.value, QuestError) and isinstance(info.value, ValueError)
    assert str(info.value) == "concurrency must be between 1 and 64, got '-1'"  # an override: its own name
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_hostile_input_is_quoted_escaped_and_short(monkeypatch):
    message = refused(monkeypatch, QUEST_RETRIES="\x1b[31m" + "9" * 500)
    assert "\x1b" not in message and "\\x1b" in message and len(message) < 200


# --- contact -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("you@example.com\nX-Injected: 1", "'\\n'"),
        ("you@example.com\r", "'\\r'"),
        ("you\t@example.com", "'\\t'"),
        ("Jos\u00e9 <jose@example.com>", "'\\xe9'"),
        ("you@\u0435xample.com", "'\\u0435'"),  # Cyrillic e
        ("you@example.com\x7f", "'\\x7f'"),
        ("x" * 300 + "@example.com", "at most 256"),
    ],
)
def test_contact_refused(monkeypatch, value, needle):
    message = refused(monkeypatch, QUEST_CONTACT=value)
    assert message.startswith("QUEST_CONTACT: ") and needle in message


def test_contact_blank_is_unset_and_spaces_are_trimmed(monkeypatch):
    assert settings_from(monkeypatch, QUEST_CONTACT="   ").contact is None
    settings = settings_from(monkeypatch, QUEST_CONTACT="  you@example.com ")
    assert settings.user_agent("https://download.bls.gov/").endswith("(+you@example.com)")


@pytest.mark.parametrize(
    "url",
    [
        "https://download.bls.gov/pub/time.series/pr/",
        "https://download.bls.gov./pub/",
        "https://download.bls.gov../pub/",
        "https://DOWNLOAD.BLS.GOV:443/pub/",
        "http://Download.Bls.Gov:8080/",
        "https://user@download.bls.gov/",
        "https://user:pw@www.bls.gov/",
        "https://www.bls.gov/",
        "https://data.bls.gov/",
        "https://bls.gov/",
        "https://BLS.GOV./",
        "https://a.b.bls.gov/",
        "https://\uff44ownload.bls.gov/",  # full-width d, which IDNA maps to ASCII
        "https://download.bls\u3002gov/",  # ideographic full stop: a dot to IDNA
    ],
)
def test_contact_required_for_bls_and_its_subdomains(url):
    with pytest.raises(ConfigError, match="QUEST_CONTACT"):
        Settings(contact=None).contact_for(url)
    assert Settings(contact="you@example.com").contact_for(url) == "you@example.com"


@pytest.mark.parametrize(
    "url",
    [
        "https://notbls.gov/",
        "https://bls.gov.evil.com/",
        "https://blsXgov/",
        "https://download.bls.gov@evil.example/",  # userinfo, the host is evil.example
        "http://127.0.0.1:8000/pub/time.series/",
        "https://honolulu-api.datausa.io/tesseract/data.jsonrecords",
        "not a url",
        "http://[::1",
    ],
)
def test_contact_not_required_elsewhere(url):
    assert Settings(contact=None).contact_for(url) == NEUTRAL_CONTACT


def test_url_host_normalises():
    assert url_host("https://User@DOWNLOAD.bls.gov.:443/x") == "download.bls.gov"
    assert url_host("download.bls.gov/pub") == "download.bls.gov"
    assert url_host("") == ""


# --- surveys -------------------------------------------------------------------------------------


def test_surveys_are_split_lowercased_and_deduplicated(monkeypatch):
    assert settings_from(monkeypatch, QUEST_BLS_SURVEYS=" PR, ce,,pr ").bls_surveys == ["pr", "ce"]
    assert Settings(bls_surveys=["Pr", "pr", "cu"]).bls_surveys == ["pr", "cu"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (" , ,", "at least one survey"),
        ("", "at least one survey"),
        ("pr/../x", "letters and digits"),
        ("pr ce", "letters and digits"),
        ("pr\u00fc", "letters and digits"),  # isalnum() would let this through
        ("\u00b2", "letters and digits"),
        ("p" * 33, "at most 32"),
        (",".join(f"s{i}" for i in range(101)), "at most 100"),
    ],
)
def test_surveys_refused(monkeypatch, value, needle):
    message = refused(monkeypatch, QUEST_BLS_SURVEYS=value)
    assert message.startswith("QUEST_BLS_SURVEYS: ") and needle in message


def test_the_listing_cap_is_a_setting_checked_when_read(monkeypatch):
    assert settings_from(monkeypatch).listing_max_bytes == 8 * 1024 * 1024
    assert settings_from(monkeypatch, QUEST_LISTING_MAX_BYTES="65536").listing_max_bytes == 65536
    for value in ("0", "-1", "1024", "nan", "8MiB", str(2**40), ""):
        assert refused(monkeypatch, QUEST_LISTING_MAX_BYTES=value).startswith(
            "QUEST_LISTING_MAX_BYTES must be"
        )
