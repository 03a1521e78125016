"""The stat cache believes an entry only while the listing shows the object unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from flows.core import stat_cache
from flows.core.objects import StoredObject
from flows.core.stat_cache import CachedStat, Listed

A = Listed("bls/pr/a", 5, "e1", "2026-11-24T06:00:00.123000+00:00")
B = Listed("bls/pr/b", 7, "e2", "2026-11-24T06:00:01.000000+00:00")
LATER = datetime(2026, 11, 24, 6, 0, 2, tzinfo=UTC)  # when the listing was made, by S3's clock


def test_round_trip_and_hits():
    entries = [CachedStat(A, {"sha256": "x"}), CachedStat(B, {})]
    cache = stat_cache.decode(stat_cache.encode(entries))
    lookup = stat_cache.look_up([A, B], cache)
    assert lookup.misses == []
    assert lookup.hits["bls/pr/a"] == StoredObject("bls/pr/a", 5, {"sha256": "x"}, "e1")
    assert stat_cache.refreshed([A, B], cache, {}, LATER) is None  # nothing to write on a no-change read


def test_any_listed_change_is_a_miss():
    cache = {A.key: CachedStat(A, {"sha256": "old"})}
    for changed in (
        Listed(A.key, 6, A.etag, A.last_modified),  # other size
        Listed(A.key, A.size, "e9", A.last_modified),  # other bytes
        Listed(A.key, A.size, A.etag, "2026-11-24T07:00:00+00:00"),  # rewritten, e.g. metadata only
    ):
        assert stat_cache.look_up([changed], cache).misses == [changed]


def test_refresh_caches_heads_that_match_the_listing_and_drops_gone_keys():
    cache = {A.key: CachedStat(A, {}), "bls/pr/gone": CachedStat(Listed("bls/pr/gone", 1, "g", "t"), {})}
    fresh = {B.key: StoredObject(B.key, B.size, {"sha256": "b"}, B.etag)}
    entries = stat_cache.refreshed([A, B], cache, fresh, LATER)
    assert entries is not None
    assert {e.listed.key: e.metadata for e in entries} == {A.key: {}, B.key: {"sha256": "b"}}


def test_a_head_that_saw_other_bytes_is_not_cached():
    raced = {B.key: StoredObject(B.key, B.size, {"sha256": "newer"}, "e-newer")}
    entries = stat_cache.refreshed([B], {}, raced, LATER)
    assert entries == []  # read again next time, never believed against the older listing


def test_an_object_written_in_the_listings_own_second_is_not_cached():
    """A same-bytes rewrite later in that second would carry the same stamp, so wait it out."""
    head = {B.key: StoredObject(B.key, B.size, {}, B.etag)}
    same_second = datetime(2026, 11, 24, 6, 0, 1, 900000, tzinfo=UTC)
    assert stat_cache.refreshed([B], {}, head, same_second) == []
    assert stat_cache.refreshed([B], {}, head, None) == []  # no server clock: never cached
    assert stat_cache.refreshed([B], {}, head, LATER) == [CachedStat(B, {})]
    assert not stat_cache.settled(Listed("k", 1, "e", "not a time"), LATER)
    assert not stat_cache.settled(Listed("k", 1, "e", "2026-11-24T06:00:00"), LATER)  # no zone


def test_garbled_or_foreign_caches_are_empty():
    assert stat_cache.decode(b"") == {}
    assert stat_cache.decode(b"\xff\xfe") == {}
    assert stat_cache.decode(b'{"format": 2, "objects": {}}') == {}
    bad = {"format": 1, "objects": {"k": {"size": "5", "etag": "e", "last_modified": "t", "metadata": {}}}}
    assert stat_cache.decode(json.dumps(bad).encode()) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@given(st.binary(max_size=200))
def test_decode_never_raises_on_bytes(data):
    assert isinstance(stat_cache.decode(data), dict)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_decode_never_raises_on_objects(objects):
    entries = stat_cache.decode(json.dumps({"format": 1, "objects": objects}).encode())
    assert all(isinstance(e, CachedStat) for e in entries.values())


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=6), st.integers(0, 10**12), st.text(max_size=6), st.text()),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_what_is_written_is_what_is_read(rows):
    entries = [CachedStat(Listed(k, s, e, t), {"m": e}) for k, s, e, t in rows]
    assert stat_cache.decode(stat_cache.encode(entries)) == {e.listed.key: e for e in entries}


# --------------------------------------------------------------------------- issue 27: hostile bytes

HOSTILE_CACHES = {
    "nested 100k deep": b'{"format":1,"objects":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "invalid UTF-8": b'{"format":1,"objects":{"\xff":{}}}',
    "NaN": b'{"format":1,"objects":{},"x":NaN}',
    "Infinity size": b'{"format":1,"objects":{"k":{"size":Infinity,"etag":"e","last_modified":"t"}}}',
    "duplicate keys": b'{"format":1,"objects":{},"objects":{"k":{}}}',
    "huge int": b'{"format":1,"objects":{},"n":1' + b"0" * 5000 + b"}",
    "over the cap": b'{"format":1,"objects":{},"pad":"' + b" " * (17 * 1024 * 1024) + b'"}',
    "a list": b"[1,2,3]",
    "another format": b'{"format":2,"objects":{}}',
}


def test_a_garbled_cache_reads_as_empty_with_one_line_saying_why():
    for name, data in HOSTILE_CACHES.items():
        entries, problem = stat_cache.read(data)
        assert entries == {}, name
        assert problem and "\n" not in problem and "read as empty" in problem, name
    assert stat_cache.read(b"") == ({}, None)  # no cache at all is no problem


def test_wrong_typed_entries_are_dropped_and_counted():
    good = {"size": 1, "etag": "e", "last_modified": "t", "metadata": {}}
    doc = {
        "format": 1,
        "objects": {
            "ok": good,
            "bool size": {**good, "size": True},
            "negative": {**good, "size": -1},
            "float": {**good, "size": 1.5},
            "metadata list": {**good, "metadata": []},
            "metadata int": {**good, "metadata": {"a": 1}},
        },
    }
    entries, problem = stat_cache.read(json.dumps(doc).encode())
    assert list(entries) == ["ok"]
    assert problem == "stat cache has 5 unreadable entries; they are read again"


def _sane(entries) -> None:
    for key, entry in entries.items():
        assert isinstance(key, str) and entry.listed.key == key
        assert type(entry.listed.size) is int and entry.listed.size >= 0
        assert isinstance(entry.listed.etag, str) and isinstance(entry.listed.last_modified, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry.metadata.items())


@given(st.binary(max_size=2048))
def test_any_bytes_read_as_a_sane_cache_or_none(data):
    entries, problem = stat_cache.read(data)
    _sane(entries)
    assert problem is None or "\n" not in problem


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.text(max_size=6),
        _json
        | st.fixed_dictionaries({"size": _json, "etag": _json, "last_modified": _json, "metadata": _json}),
        max_size=5,
    ),
    st.sampled_from([1, 2, "1", None]),
)
def test_any_json_shaped_cache_reads_sanely(objects, fmt):
    data = json.dumps({"format": fmt, "objects": objects}).encode()  # NaN and Infinity included
    entries, problem = stat_cache.read(data)
    _sane(entries)
    assert problem is None or "\n" not in problem
