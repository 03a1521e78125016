"""Survey discovery against the loopback upstream's real root listing, with the local store and moto S3:
one root GET, new surveys picked up, gone ones reported and kept (removed only with
allow_mass_delete, under their lease), a bad root changing nothing, an explicit list making no GET."""

from __future__ import annotations

import logging
import re

import pytest

from flows.core.errors import (
    HttpStatusError,
    IncompleteListing,
    LeaseHeld,
    ListingError,
    MassDeleteError,
    StoreError,
)
from flows.devkit.samples import population_body
from flows.devkit.upstream_server import UpstreamServer
from flows.discovery import SurveySelection, resolve_surveys, retire_surveys, stored_surveys
from flows.io.http import make_client
from flows.io.store import LocalStore, S3Store
from flows.settings import Settings

BUCKET = "quest-test"
log = logging.getLogger("test.discovery")


@pytest.fixture
def upstream():
    surveys = {"pr": {"pr.a": b"pr a\n", "pr.b": b"pr b\n"}, "cu": {"cu.a": b"cu a\n"}}
    with UpstreamServer(surveys, population_body(), require_contact=True) as up:
        yield up


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "data")
    request.getfixturevalue("aws")
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return S3Store(BUCKET, "mirror", client=client)


def _settings(upstream, store, **extra):
    url = str(store.root) if isinstance(store, LocalStore) else f"s3://{BUCKET}/mirror"
    values = {
        "store": url,
        "bls_base_url": upstream.bls_base_url,
        "population_url": upstream.population_url,
        "contact": "tests@example.com",
        "retries": 2,
        "retry_delay_seconds": 0.01,
        "retry_max_delay_seconds": 0.02,
        "lease_seconds": 30,
    }
    return Settings(**(values | extra))


def _resolve(settings, requested=None):
    with make_client(settings, settings.bls_base_url) as client:
        return resolve_surveys(settings, requested, client, log)


def _mirror(store, survey, names=("f1", "f2")):
    for name in names:
        store.put_bytes(f"bls/{survey}/{name}", name.encode())


# --------------------------------------------------------------------------- the store's folders


def test_list_prefixes_is_one_level_and_hides_the_stores_own(store):
    _mirror(store, "pr")
    store.put_bytes("bls/cu/deep/er/x", b"x")
    store.put_bytes("bls/top-level-file", b"x")
    store.put_bytes("population/p.json", b"{}")
    with store.lease("bls/zz/", 30):  # only the lease record under bls/zz/
        pass
    assert store.list_prefixes("bls/") == ["bls/cu/", "bls/pr/", "bls/zz/"]
    assert store.list_prefixes() == ["bls/", "population/"]
    assert store.list_prefixes("bls/cu/") == ["bls/cu/deep/"]
    assert store.list_prefixes("nothing/") == []
    for name in ("f1", "f2"):
        store.delete(f"bls/pr/{name}")
    assert store.list_prefixes("bls/") == ["bls/cu/", "bls/zz/"]  # an emptied folder is no folder
    with pytest.raises(StoreError, match="invalid prefix"):
        store.list_prefixes("bls")
    store.put_bytes("bls/Not-A-Survey/x", b"x")
    assert stored_surveys(store) == ["cu", "zz"]


# --------------------------------------------------------------------------- discovery


def test_discovery_makes_one_root_get_and_compares_with_the_store(upstream, store, caplog):
    _mirror(store, "pr")
    _mirror(store, "old")
    with store.lease("bls/leaseonly/", 30):
        pass
    settings = _settings(upstream, store, bls_surveys="all")
    with caplog.at_level(logging.INFO, logger=log.name):
        selection = _resolve(settings)
    assert len(upstream.root_gets()) == 1 and len(upstream.requests) == 1  # no survey listing, no file
    assert selection.discovered and selection.root_url == upstream.bls_base_url
    assert (selection.surveys, selection.new, selection.gone) == (["cu", "pr"], ["cu"], ["old"])
    line = (
        f"discovered 2 surveys at {upstream.bls_base_url}: 1 new (cu), "
        "1 gone (old; kept: pass --allow-mass-delete to remove)"
    )
    assert selection.describe() == line
    assert line in caplog.messages
    assert any("survey old is no longer listed" in m for m in caplog.messages)
    # `["all"]` asks for discovery whatever QUEST_BLS_SURVEYS says.
    upstream.clear_log()
    assert _resolve(_settings(upstream, store), ["all"]).surveys == ["cu", "pr"]
    assert len(upstream.root_gets()) == 1


def test_a_new_survey_is_picked_up_and_odd_folders_are_reported(upstream, store, caplog):
    settings = _settings(upstream, store, bls_surveys="all")
    assert _resolve(settings).surveys == ["cu", "pr"]
    upstream.add_survey("ap", {"ap.a": b"a"})
    upstream.add_root_entry("Not-A-Survey")
    with caplog.at_level(logging.WARNING, logger=log.name):
        selection = _resolve(settings)
    assert selection.surveys == ["ap", "cu", "pr"] and selection.new == ["ap", "cu", "pr"]
    assert selection.skipped == ["Not-A-Survey"]
    assert "1 folders skipped (Not-A-Survey: not survey folders)" in selection.describe()
    assert any("'Not-A-Survey' is not a survey name" in m for m in caplog.messages)


def test_a_gone_survey_is_kept_and_removed_only_with_allow_mass_delete(upstream, store):
    settings = _settings(upstream, store, bls_surveys="all")
    for survey in ("pr", "cu"):
        _mirror(store, survey)
    upstream.remove_survey("cu")
    selection = _resolve(settings)
    assert selection.gone == ["cu"] and selection.surveys == ["pr"]

    assert retire_surveys(settings, selection.gone, False, log) == []
    assert store.list_keys("bls/cu/") == ["bls/cu/f1", "bls/cu/f2"]

    # allow_mass_delete alone does not lift the retirement share: 1 of 2 stored surveys > 10%.
    with pytest.raises(MassDeleteError, match=r"refusing to retire 1 of 2 stored surveys at once \(> 10%"):
        retire_surveys(settings, selection.gone, True, log)
    assert store.list_keys("bls/cu/") == ["bls/cu/f1", "bls/cu/f2"]

    settings = _settings(upstream, store, bls_surveys="all", max_retire_fraction=0.5)
    # Another sync holds cu's lease: nothing of it is removed.
    with store.lease("bls/cu/", 30, owner="elsewhere"), pytest.raises(LeaseHeld):
        retire_surveys(settings, ["cu"], True, log, store=_short_wait(store))
    assert store.list_keys("bls/cu/") == ["bls/cu/f1", "bls/cu/f2"]
    selection.retired = retire_surveys(settings, selection.gone, True, log)
    assert selection.retired == ["cu"] and store.list_keys("bls/cu/") == []
    assert store.list_keys("bls/pr/") == ["bls/pr/f1", "bls/pr/f2"]
    assert "1 gone (cu; removed (--allow-mass-delete))" in selection.describe()
    # What is left under bls/cu/ (the released lease record) is not a survey gone again.
    assert _resolve(settings).gone == []


def _short_wait(store):
    """The same store, whose leases give up at once when held (the test need not wait 10 s)."""

    class Impatient:
        def __getattr__(self, name):
            return getattr(store, name)

        def lease(self, prefix, ttl, **kwargs):
            return store.lease(prefix, ttl, **(kwargs | {"wait_seconds": 0.1}))

    return Impatient()


@pytest.mark.parametrize("fault", ["html_error", "empty", "cut", "503", "404"])
def test_a_bad_root_raises_a_clear_error_and_deletes_nothing(upstream, store, fault):
    from flows.runtime.plain import plain_ingest

    for survey in ("pr", "cu", "old"):
        _mirror(store, survey)
    before = store.list_keys()
    if fault in ("html_error", "empty"):
        upstream.set_root_listing_mode(fault)
        expected: type[Exception] = ListingError
    elif fault == "cut":
        upstream.cut("/pub/time.series/", after_bytes=300, times=None, announce_length=False)
        expected = IncompleteListing
    else:
        upstream.fail("/pub/time.series/", int(fault), times=None)
        expected = HttpStatusError
    settings = _settings(upstream, store, bls_surveys="all")
    with pytest.raises(expected) as info:
        plain_ingest(settings, ["all"], allow_mass_delete=True)
    assert upstream.bls_base_url in str(info.value)
    assert store.list_keys() == before
    assert upstream.listing_gets() == [] and upstream.file_gets() == []
    assert len(upstream.root_gets()) == (3 if fault == "503" else 1)  # 503 is retried (retries=2)


def test_a_root_listing_more_surveys_than_the_cap_is_refused_before_any_listing(upstream, store):
    """A page alone never fans out into hundreds of runs: more than MAX_SURVEYS folders is an error."""
    from flows.runtime.plain import plain_ingest
    from flows.settings import MAX_SURVEYS

    for i in range(MAX_SURVEYS - 1):  # pr and cu are there already: one over the cap
        upstream.add_survey(f"s{i:03d}", {f"s{i:03d}.a": b"a"})
    _mirror(store, "pr")
    before = store.list_keys()
    with pytest.raises(
        ListingError, match=rf"lists {MAX_SURVEYS + 1} survey folders, more than {MAX_SURVEYS}"
    ):
        plain_ingest(_settings(upstream, store, bls_surveys="all"), ["all"], allow_mass_delete=True)
    assert store.list_keys() == before
    assert len(upstream.root_gets()) == 1 and upstream.listing_gets() == [] and upstream.file_gets() == []
    upstream.remove_survey("s000")  # at the cap: accepted
    assert len(_resolve(_settings(upstream, store, bls_surveys="all")).surveys) == MAX_SURVEYS


def test_an_explicit_list_makes_no_root_get(upstream, store):
    _mirror(store, "old")
    settings = _settings(upstream, store, bls_surveys="pr,cu")
    assert _resolve(settings) == SurveySelection(surveys=["pr", "cu"])
    assert _resolve(settings, ["cu"]).surveys == ["cu"]
    assert _resolve(_settings(upstream, store, bls_surveys="all"), ["pr"]).surveys == ["pr"]
    assert upstream.requests == []
    assert _resolve(settings).describe() == "2 surveys (as configured): pr, cu"


def test_plain_ingest_mirrors_every_discovered_survey(upstream, store):
    from flows.runtime.plain import plain_ingest

    settings = _settings(upstream, store, bls_surveys="all")
    summary = plain_ingest(settings, ["all"])
    assert [m.survey for m in summary.surveys] == ["cu", "pr"]
    assert store.list_keys("bls/") == ["bls/cu/cu.a", "bls/pr/pr.a", "bls/pr/pr.b"]
    assert len(upstream.root_gets()) == 1 and len(upstream.listing_gets()) == 2

    upstream.add_survey("ap", {"ap.a": b"a"})
    upstream.remove_survey("cu")
    upstream.clear_log()
    summary = plain_ingest(settings, ["all"])
    assert [m.survey for m in summary.surveys] == ["ap", "pr"]
    assert summary.surveys[1].counts()["kept"] == 2 and summary.surveys[1].added == []
    assert store.list_keys("bls/cu/") == ["bls/cu/cu.a"]  # gone upstream, kept
    assert (summary.selection.new, summary.selection.gone) == (["ap"], ["cu"])
    assert len(upstream.root_gets()) == 1 and len(upstream.listing_gets()) == 2
    assert [r.path for r in upstream.file_gets()] == ["/pub/time.series/ap/ap.a"]

    plain_ingest(
        _settings(upstream, store, bls_surveys="all", max_retire_fraction=0.5),
        ["all"],
        allow_mass_delete=True,
    )
    assert store.list_keys("bls/") == ["bls/ap/ap.a", "bls/pr/pr.a", "bls/pr/pr.b"]


@pytest.mark.parametrize("broken", ["cu", "pr"])
def test_one_failing_discovered_survey_does_not_stop_the_others(upstream, store, broken):
    from flows.core.errors import MirrorError
    from flows.runtime.plain import plain_ingest

    upstream.add_survey("ap", {"ap.a": b"a"})
    upstream.set_listing_mode(broken, "html_error")
    settings = _settings(upstream, store, bls_surveys="all")
    with pytest.raises(MirrorError, match=rf"^1 of 3 surveys failed: {broken}: .*not a directory listing"):
        plain_ingest(settings, ["all"])
    mirrored = {k.split("/")[1] for k in store.list_keys("bls/")}
    assert mirrored == {"ap", "cu", "pr"} - {broken}
    # The population snapshot (it triggers the reports, which read pr) is taken unless pr failed.
    assert bool(store.list_keys("population/")) is (broken != "pr")
    # An explicit list stops at its first failure, as before.
    with pytest.raises(ListingError):
        plain_ingest(settings, [broken, "ap"])


@pytest.mark.parametrize("broken", ["cu", "pr"])
def test_the_ingest_flow_goes_on_past_a_failing_discovered_survey(
    prefect_harness, upstream, tmp_path, monkeypatch, broken
):
    """The in-process ingest flow treats discovered surveys as `quest sync` and the plain entry do."""
    from flows.core.errors import MirrorError
    from flows.ingest import ingest

    store = LocalStore(tmp_path / "data")
    for name, value in {
        "QUEST_STORE": str(store.root),
        "QUEST_BLS_BASE_URL": upstream.bls_base_url,
        "QUEST_POPULATION_URL": upstream.population_url,
        "QUEST_CONTACT": "tests@example.com",
        "QUEST_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)
    upstream.add_survey("ap", {"ap.a": b"a"})
    upstream.set_listing_mode(broken, "html_error")
    with pytest.raises(MirrorError, match=rf"^1 of 3 surveys failed: {broken}: .*not a directory listing"):
        ingest(["all"])
    assert {k.split("/")[1] for k in store.list_keys("bls/")} == {"ap", "cu", "pr"} - {broken}
    assert bool(store.list_keys("population/")) is (broken != "pr")


# ----------------------------------------------------------- unreadable root rows, the retire guard

_CU = '<A HREF="/pub/time.series/cu/">cu</A>'
ROOT_MANGLES = {
    "no trailing slash": lambda page: page.replace(_CU, '<A HREF="/pub/time.series/cu">cu</A>'),
    "query": lambda page: page.replace(_CU, '<A HREF="/pub/time.series/cu/?sort=1">cu</A>'),
    "size instead of <dir>": lambda page: re.sub(
        r"&lt;dir&gt;( <A HREF=\"/pub/time.series/cu/\">)", r"4096\1", page
    ),
    "href elsewhere, text cu": lambda page: page.replace(_CU, '<A HREF="https://evil.example/x/">cu</A>'),
    "single-quoted href": lambda page: page.replace(_CU, "<A HREF='/pub/time.series/cu/'>cu</A>"),
    "percent-encoded twice": lambda page: page.replace(_CU, '<A HREF="/pub/time.series/%2563u/">%2563u</A>'),
}


def _serve_root(upstream, mangle):
    clean = upstream._root_html().decode()
    page = ROOT_MANGLES[mangle](clean)
    assert page != clean
    upstream.fail("/pub/time.series/", 200, times=None, body=page.encode())


@pytest.mark.parametrize("mangle", sorted(ROOT_MANGLES))
def test_a_mangled_root_row_never_retires_its_survey(upstream, store, mangle):
    """A real run with --allow-mass-delete (and no retire share in the way): the survey whose root row
    cannot be read as a folder is held, its mirror untouched, the others synced."""
    from flows.runtime.plain import plain_ingest

    settings = _settings(upstream, store, bls_surveys="all", max_retire_fraction=1.0)
    plain_ingest(settings, ["all"])
    before = store.list_keys("bls/cu/")
    assert before == ["bls/cu/cu.a"]
    upstream.put_file("pr", "pr.c", b"new\n")
    _serve_root(upstream, mangle)
    summary = plain_ingest(settings, ["all"], allow_mass_delete=True)
    assert store.list_keys("bls/cu/") == before
    assert summary.selection.gone == [] and summary.selection.held == ["cu"]
    assert summary.selection.retired == [] and summary.selection.surveys == ["pr"]
    assert "1 held (cu: a root row that is no clean folder may name them)" in summary.selection.describe()
    assert store.list_keys("bls/pr/") == ["bls/pr/pr.a", "bls/pr/pr.b", "bls/pr/pr.c"]
    lines = _warnings_of(lambda: _resolve(settings))
    assert len(lines) <= 2 and "held (neither mirrored nor removed): 1 row: cu: " in lines[-1]


def _warnings_of(call):
    """The warning lines `call` logs on the test logger (a handler of its own: plain_ingest's log
    set-up may leave pytest's capture out)."""
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Keep(logging.WARNING)
    log.addHandler(handler)
    try:
        call()
    finally:
        log.removeHandler(handler)
    return lines


def test_the_ingest_flow_never_retires_a_survey_whose_root_row_is_unreadable(
    prefect_harness, upstream, tmp_path, monkeypatch
):
    """The same through the Prefect `ingest` flow, run in-process with allow_mass_delete."""
    from flows.ingest import ingest

    store = LocalStore(tmp_path / "data")
    for name, value in {
        "QUEST_STORE": str(store.root),
        "QUEST_BLS_BASE_URL": upstream.bls_base_url,
        "QUEST_POPULATION_URL": upstream.population_url,
        "QUEST_CONTACT": "tests@example.com",
        "QUEST_RETRIES": "0",
        "QUEST_MAX_RETIRE_FRACTION": "1",
    }.items():
        monkeypatch.setenv(name, value)
    ingest(["all"])
    assert store.list_keys("bls/cu/") == ["bls/cu/cu.a"]
    _serve_root(upstream, "no trailing slash")
    summary = ingest(["all"], allow_mass_delete=True)
    assert store.list_keys("bls/cu/") == ["bls/cu/cu.a"]
    assert summary.selection is not None and summary.selection.held == ["cu"]


def test_retiring_more_than_the_share_of_stored_surveys_retires_none(upstream, store):
    """QUEST_MAX_RETIRE_FRACTION (default 10%) caps one run's retirements, --allow-mass-delete or not."""
    from flows.runtime.plain import plain_ingest

    for i in range(8):  # 10 surveys with pr and cu
        upstream.add_survey(f"s{i}", {f"s{i}.a": b"a"})
    settings = _settings(upstream, store, bls_surveys="all")
    plain_ingest(settings, ["all"])
    before = store.list_keys()
    upstream.remove_survey("s0")
    upstream.remove_survey("s1")
    with pytest.raises(MassDeleteError, match=r"refusing to retire 2 of 10 stored surveys at once \(> 10%"):
        plain_ingest(settings, ["all"], allow_mass_delete=True)
    assert store.list_keys() == before  # nothing removed (the other surveys were synced: no change)
    upstream.add_survey("s1", {"s1.a": b"a"})  # one of ten is within the share
    summary = plain_ingest(settings, ["all"], allow_mass_delete=True)
    assert summary.selection.retired == ["s0"] and store.list_keys("bls/s0/") == []


# --------------------------------------------------------------------------- the log stays small


def test_a_root_full_of_junk_folders_is_one_warning_line(upstream, store, caplog):
    """100 surveys and 2,000 junk folders: a count and the first few, not a line per folder."""
    from flows.settings import MAX_SURVEYS

    for i in range(MAX_SURVEYS - 2):
        upstream.add_survey(f"s{i:03d}", {f"s{i:03d}.a": b"a"})
    for i in range(2_000):
        upstream.add_root_entry(f"Junk-{i:05d}")
    with caplog.at_level(logging.INFO, logger=log.name):
        selection = _resolve(_settings(upstream, store, bls_surveys="all"))
    assert len(selection.surveys) == MAX_SURVEYS
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and len(warnings[0]) < 2_000
    assert selection.skipped_count == 2_000 and len(selection.skipped) <= 5
    assert len(warnings) == 1 and len(warnings[0]) < 2_000
    assert "skipped 2,000 rows, the first 5: folder 'Junk-00000' is not a survey name" in warnings[0]
    assert "... 1,995 more" in warnings[0]
    assert sum(len(m) for m in caplog.messages) < 5_000
    assert "2,000 folders skipped (Junk-00000, " in selection.describe()


def test_a_survey_listing_full_of_odd_rows_is_two_warning_lines(upstream, store, caplog):
    from flows import mirror

    page = upstream._listing_html("pr").decode()
    odd = "".join(
        f'  6/6/2024  8:30 AM  5 <A HREF="http://evil.example/x{i}">x{i}</A><br>'
        f'  13/45/2024  8:30 AM  5 <A HREF="/pub/time.series/pr/bad{i}">bad{i}</A><br>'
        for i in range(2_000)
    )
    upstream.fail(
        "/pub/time.series/pr/", 200, times=None, body=page.replace("</pre>", odd + "</pre>").encode()
    )
    settings = _settings(upstream, store)
    with make_client(settings, settings.bls_base_url) as client, caplog.at_level(logging.WARNING):
        listing = mirror.list_survey(upstream.survey_url("pr"), client, settings, log)
    assert len(listing.skipped) == 2_000 and len(listing.unreadable) == 2_000
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all(len(w) < 2_000 for w in warnings)
    assert "2,000 rows, the first 5: 'http://evil.example/x0'" in warnings[0]
    assert "unreadable 2,000 rows, the first 5: bad0: unreadable listing row" in warnings[1]
