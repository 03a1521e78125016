"""The object store: S3 (boto3) or a local directory, behind one small interface.

Both backends keep the same promises, and the same tests run against both:
- keys are `/`-separated and relative to the store root (`s3://bucket/prefix` or a directory);
  segments starting with `.quest-` are the store's own (temp objects, leases) and never listed;
- a write is atomic: readers see the old object or the complete new one, never a partial one;
- an object is published together with its integrity metadata in one step, or not at all: the
  `sha256` of its bytes and `sha256-size`, the byte count it covers, or on an S3 multipart upload
  `crc32-size`, the byte count of the full-object CRC-32 S3 verified at completion;
  `trusted_integrity` tells a caller whether a stored object's metadata can be believed without
  reading the bytes;
- `put_stream` never holds a whole object in memory, counts and checksums what it writes, and
  refuses to publish when the byte count differs from what the caller expected;
- expected failures (missing bucket, access denied, unreachable endpoint) are one-line `StoreError`s;
- a store opened `read_only` (a dry run, the ingest's checks) refuses every write, its own stat
  cache, lease and cleanup included, with a one-line `StoreError`;
- `lease(prefix, ttl)` keeps two syncs of one prefix from interleaving, and `cleanup_stale` removes
  what a killed writer left behind once it is older than a grace period.
"""

from __future__ import annotations

from typing import Any

from flows.core.errors import StoreError
from flows.io.store.base import ObjectStore, is_internal_key
from flows.io.store.lease import Lease
from flows.io.store.local import LocalStore
from flows.io.store.s3 import S3Store, describe_s3_error, make_s3_client

__all__ = [
    "Lease",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "describe_s3_error",
    "is_internal_key",
    "make_s3_client",
    "open_store",
    "parse_store_url",
    "store_from_settings",
]


def parse_store_url(url: str) -> tuple[str, str] | None:
    """(bucket, prefix) for `s3://bucket[/prefix]`, else None (a local directory)."""
    if not url.startswith("s3://"):
        return None
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"store URL {url!r} names no bucket")
    return bucket, prefix


def open_store(
    url: str,
    *,
    client: Any = None,
    multipart_threshold: int | None = None,
    part_size: int | None = None,
    max_pool_connections: int = 16,
    read_only: bool = False,
) -> ObjectStore:
    """The store for QUEST_STORE: `s3://bucket[/prefix]` or a directory path; `read_only`: every
    write refused with a `StoreError`, and no cache of its own kept (a dry run, a check)."""
    parsed = parse_store_url(url)
    if parsed is None:
        return LocalStore(url, read_only=read_only)
    bucket, prefix = parsed
    kwargs: dict[str, Any] = {"read_only": read_only}
    if multipart_threshold:
        kwargs["multipart_threshold"] = multipart_threshold
    if part_size:
        kwargs["part_size"] = part_size
    return S3Store(bucket, prefix, client=client or make_s3_client(max_pool_connections), **kwargs)


def store_from_settings(settings: Any, client: Any = None, read_only: bool = False) -> ObjectStore:
    return open_store(
        settings.store,
        read_only=read_only,
        client=client,
        multipart_threshold=settings.multipart_threshold_bytes,
        part_size=settings.multipart_chunk_bytes,
        max_pool_connections=max(16, settings.concurrency * 2),
    )
