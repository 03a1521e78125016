"""A per-prefix cache of object metadata, so a no-change plan costs one LIST and one GET (pure).

S3 lists size, ETag and LastModified but no user metadata, so reading the plan's metadata took one
HEAD per object. The cache keeps each HEAD's answer next to the listing facts it was read with. An
entry is believed only while the listing still shows the same (size, ETag, LastModified): any write
to the key with new bytes gives it a new ETag, and any later write (a copy that only replaced
metadata too) a new LastModified, so a stale or foreign entry costs a HEAD, never a wrong plan. A
crash between a publish and a cache write therefore loses nothing; a missing, cut or garbled cache
is the same as an empty one.

Listings stamp LastModified to the second, so a rewrite with the very same bytes in the same
second would look unchanged. An object is therefore cached only once its second is over by the
listing's own clock (the response's Date): every later write then carries a later stamp. (S3
stamps a multipart object with the time its upload began, so two uploads of the very same bytes
begun in one second and completed apart look alike; their metadata then describes equal bytes.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from flows.core import state_json
from flows.core.errors import GarbledState
from flows.core.objects import StoredObject

FORMAT = 1


@dataclass(frozen=True)
class Listed:
    """What a listing says of one object: enough to tell whether it changed since it was read."""

    key: str
    size: int
    etag: str
    last_modified: str  # as the listing gave it, compared as text (no clock maths)


@dataclass(frozen=True)
class CachedStat:
    listed: Listed
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lookup:
    """The objects the cache answers for, and the listed ones that need a HEAD."""

    hits: dict[str, StoredObject]
    misses: list[Listed]


def listed_stamp(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def decode(data: bytes) -> dict[str, CachedStat]:
    """The cache's entries; anything unreadable or of another format counts as no cache at all."""
    return read(data)[0]


def read(data: bytes) -> tuple[dict[str, CachedStat], str | None]:
    """The cache's entries, and one line saying what was not believed (None: all of it was, or
    there was no cache). Never raises: the cache is data from a store others can write to."""
    if not data:
        return {}, None
    try:
        doc = state_json.read_object(data, state_json.MAX_STAT_CACHE_BYTES, "stat cache")
    except GarbledState as exc:
        return {}, f"{exc}; read as empty"
    if doc.get("format") != FORMAT or not isinstance(doc.get("objects"), dict):
        return {}, f"stat cache is not of format {FORMAT}; read as empty"
    entries = {}
    for key, raw in doc["objects"].items():
        entry = _entry(key, raw)
        if entry is not None:
            entries[key] = entry
    dropped = len(doc["objects"]) - len(entries)
    return entries, (
        f"stat cache has {dropped:,} unreadable entries; they are read again" if dropped else None
    )


def _entry(key: object, raw: object) -> CachedStat | None:
    if not isinstance(key, str) or not isinstance(raw, dict):
        return None
    size, etag, stamp = raw.get("size"), raw.get("etag"), raw.get("last_modified")
    metadata = raw.get("metadata")
    if type(size) is not int or size < 0 or not isinstance(etag, str) or not isinstance(stamp, str):
        return None
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return None
    return CachedStat(Listed(key, size, etag, stamp), dict(metadata))


def encode(entries: Iterable[CachedStat]) -> bytes:
    objects = {
        e.listed.key: {
            "size": e.listed.size,
            "etag": e.listed.etag,
            "last_modified": e.listed.last_modified,
            "metadata": e.metadata,
        }
        for e in sorted(entries, key=lambda e: e.listed.key)
    }
    return json.dumps({"format": FORMAT, "objects": objects}, separators=(",", ":")).encode()


def look_up(listed: Iterable[Listed], cache: Mapping[str, CachedStat]) -> Lookup:
    hits: dict[str, StoredObject] = {}
    misses: list[Listed] = []
    for item in listed:
        entry = cache.get(item.key)
        if entry is not None and entry.listed == item:
            hits[item.key] = StoredObject(item.key, item.size, dict(entry.metadata), item.etag or None)
        else:
            misses.append(item)
    return Lookup(hits, misses)


def _seconds(item: Listed, when: datetime | None) -> tuple[int, int] | None:
    """The whole seconds of the item's LastModified and of `when`; None when either is unknown
    or has no time zone (no comparison is then trusted)."""
    try:
        stamp = datetime.fromisoformat(item.last_modified)
    except ValueError:
        return None
    if when is None or stamp.tzinfo is None or when.tzinfo is None:
        return None
    return int(stamp.timestamp()), int(when.timestamp())


def settled(item: Listed, listed_at: datetime | None) -> bool:
    """True when the object's LastModified second was over before the listing was made."""
    pair = _seconds(item, listed_at)
    return pair is not None and pair[0] < pair[1]


def our_write(item: Listed, obj: StoredObject, written_at: datetime | None) -> bool:
    """True when the listed object is the one a store wrote itself: same size and ETag, stamped no
    later than the second the write's response was dated (a later rewrite by anyone else, even of
    the same bytes, carries a later stamp)."""
    pair = _seconds(item, written_at)
    return (obj.size, obj.etag) == (item.size, item.etag) and pair is not None and pair[0] <= pair[1]


def refreshed(
    listed: Iterable[Listed],
    cache: Mapping[str, CachedStat],
    fresh: Mapping[str, StoredObject],
    listed_at: datetime | None,
) -> list[CachedStat] | None:
    """The cache to write after a lookup, or None when the stored one is still exact.

    `fresh` holds the HEAD answers for the misses. A HEAD that saw other bytes than the listing
    (its ETag or size differ: the key was written in between) is not cached, so it is read again;
    nor is an object written in the listing's own second (see the module's docstring).
    """
    entries: list[CachedStat] = []
    changed = False
    listed = list(listed)
    for item in listed:
        entry = cache.get(item.key)
        if entry is not None and entry.listed == item:
            entries.append(entry)
            continue
        changed = True
        obj = fresh.get(item.key)
        matches = obj is not None and obj.size == item.size and (obj.etag or "") == item.etag
        if obj is not None and matches and settled(item, listed_at):
            entries.append(CachedStat(item, dict(obj.metadata)))
    if len(cache) != len(entries):
        changed = True
    return entries if changed else None
