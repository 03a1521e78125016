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
