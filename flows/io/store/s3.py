"""The S3 store: one PutObject with our sha256, or a multipart upload S3 checks by its full-object CRC-32."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import json
import logging
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import IO, Any

from flows.core import crc32, stat_cache, state_json
from flows.core.errors import StoreError
from flows.core.objects import META_CRC32_SIZE, META_SHA256, META_SHA256_SIZE, StoredObject
from flows.io.store.base import (
    LEASE_NAME,
    S3_MIN_PART,
    STAT_CACHE_NAME,
    TMP_SEGMENT,
    _check_key,
    _check_prefix,
    _check_size,
    _clean_metadata,
    _Counted,
    _iso,
    _one_line,
    _tmp_started,
    head_each,
    is_internal_key,
    read_only_refusal,
)
from flows.io.store.lease import Lease, LeaseRead, lease_read

_log = logging.getLogger(__name__)
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_ERROR_HINTS = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied (check the credentials and the role's S3 permissions)",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the AWS access key is not valid",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
    "ExpiredToken": "the AWS session token has expired",
    "InvalidBucketName": "the bucket name is not valid",
    "PermanentRedirect": "the bucket is in another region (set AWS_REGION)",
}


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(
        response.get("Error", {}).get("Code")
        or response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def describe_s3_error(action: str, where: str, exc: Exception) -> str:
    """One line for a failed S3 call: what, where, and the cause in words (never a traceback)."""
    code = _error_code(exc)
    if code:
        response = getattr(exc, "response", {}) or {}
        detail = _ERROR_HINTS.get(code) or response.get("Error", {}).get("Message") or "request failed"
        text = f"{action} {where}: {detail} ({code})"
    elif type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        text = f"{action} {where}: cannot reach the S3 endpoint ({exc})"
    elif type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        text = f"{action} {where}: no usable AWS credentials ({exc})"
    else:
        text = f"{action} {where}: {type(exc).__name__}: {exc}"
    return _one_line(text)


class S3Store:
    """A bucket (optionally a prefix in it), through boto3.

    Small objects go up in one PutObject, metadata and bytes together, with our sha256 as the
    checksum S3 verifies. Larger ones stream as a multipart upload straight onto the final key:
    the metadata is given when the upload starts and appears with the bytes at completion, and the
    completion, sent only once the byte count is right, carries the full-object CRC-32 that S3
    checks against what it assembled. So a failure or a concurrent writer can never leave the key
    with missing or foreign metadata. (S3's SHA256 of a multipart upload is a checksum of part
    checksums, not the object's sha256; its FULL_OBJECT CRC-32 is the object's own.)
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        multipart_threshold: int = 8 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
        part_concurrency: int = 4,
        read_only: bool = False,
    ):
        self.bucket = bucket
        self.read_only = read_only  # a dry run's or a check's: every write refused, no cache kept
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client = client
        self.multipart_threshold = max(multipart_threshold, S3_MIN_PART)
        self.part_size = max(part_size, S3_MIN_PART)
        self.part_concurrency = max(1, part_concurrency)
        self._bucket_seen = False
        # What this store wrote (None: deleted) and when: lets `refresh_stat_cache` record a sync's
        # own writes in the stat cache without a HEAD each.
        self._written: dict[str, tuple[StoredObject, datetime | None] | None] = {}
        self._last_write = 0.0
        self._written_lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client()
        return self._client

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def full_key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _writable(self, action: str, where: str) -> None:
        if self.read_only:
            raise StoreError(read_only_refusal(action, where))

    def _call(self, action: str, where: str, method: str, **kwargs: Any) -> Any:
        """One client call; an expected failure becomes a one-line `StoreError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(describe_s3_error(action, where, exc)) from exc

    def _pages(self, action: str, where: str, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from self.client.get_paginator(operation).paginate(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(describe_s3_error(action, where, exc)) from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        where = f"s3://{self.bucket}/{self.prefix + prefix}"
        keys = []
        for page in self._pages("list", where, "list_objects_v2", Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if not is_internal_key(key):
                    keys.append(key)
        return sorted(keys)

    def list_prefixes(self, prefix: str = "") -> list[str]:
        """The folders directly under `prefix` ('' or ending in '/'), as `prefix + name + '/'`, sorted:
        one delimiter listing (CommonPrefixes), not a listing of every key below; the store's own
        folders are left out."""
        full = self.prefix + _check_prefix(prefix)
        found = []
        for page in self._pages(
            "list", f"s3://{self.bucket}/{full}", "list_objects_v2", Prefix=full, Delimiter="/"
        ):
            for common in page.get("CommonPrefixes", []):
                folder = common["Prefix"][len(self.prefix) :]
                if not is_internal_key(folder.rstrip("/")):
                    found.append(folder)
        return sorted(found)

    def head(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        full_key = self.full_key(key)
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING_KEY_CODES:
                raise StoreError(describe_s3_error("head", self.location(key), exc)) from exc
            self._check_bucket(full_key)  # a HEAD has no body: a missing bucket is a bare 404 too
            return None
        except BotoCoreError as exc:
            raise StoreError(describe_s3_error("head", self.location(key), exc)) from exc
        self._bucket_seen = True
        return StoredObject(
            key=key,
            size=int(resp["ContentLength"]),
            metadata=_clean_metadata(resp.get("Metadata")),
            etag=resp.get("ETag", "").strip('"') or None,
            last_modified=resp.get("LastModified"),
        )

    def stat_prefix(self, prefix: str, workers: int = 8) -> dict[str, StoredObject]:
        """Every object under `prefix` with its metadata: one LIST, one GET of the prefix's stat
        cache, and a HEAD only for objects written since the cache was (see `flows.core.stat_cache`).

        The cache is rewritten when it was missing or stale. It is an optimisation only: when it
        cannot be read or written the answer is the same, just paid for in HEADs.
        """
        if prefix and not prefix.endswith("/"):  # no folder of its own to keep a cache in
            return head_each(self, self.list_keys(prefix), workers)
        listed, listed_at = self._list_with_facts(prefix)
        cache_key = self.prefix + prefix + STAT_CACHE_NAME
        cache, problem = stat_cache.read(self._read_optional(cache_key, state_json.MAX_STAT_CACHE_BYTES))
        if problem:
            _log.warning("s3://%s/%s: %s", self.bucket, cache_key, problem)
        lookup = stat_cache.look_up(listed, cache)
        with self._written_lock:  # objects this store wrote itself need no HEAD
            known = {
                item.key: write[0]
                for item in lookup.misses
                if (write := self._written.get(item.key)) is not None and stat_cache.our_write(item, *write)
            }
        fresh = known | head_each(self, [m.key for m in lookup.misses if m.key not in known], workers)
        entries = stat_cache.refreshed(listed, cache, fresh, listed_at)
        if entries is not None and not self.read_only:
            self._write_optional(cache_key, stat_cache.encode(entries))
        return {**lookup.hits, **fresh}

    def refresh_stat_cache(self, prefix: str, workers: int = 8) -> None:
        """After a sync wrote under `prefix`: bring its stat cache up to date from what was
        written, so the next no-change plan needs no HEAD. Waits out the second of the last write
        (at most a second), as objects of the listing's own second are not cached."""
        with self._written_lock:
            touched = any(key.startswith(prefix) for key in self._written)
            last = self._last_write
        if not touched:
            return
        time.sleep(max(0.0, int(last) + 1.05 - time.time()))
        self.stat_prefix(prefix, workers)

    def _wrote(self, key: str, obj: StoredObject | None, response: dict[str, Any]) -> None:
        """Note a write (obj None: a delete), dated by S3's clock: the response's Date, never
        earlier than the object's LastModified."""
        written_at = _response_date(response)
        with self._written_lock:
            self._written[key] = (obj, written_at) if obj is not None else None
            self._last_write = time.time()

    def _list_with_facts(self, prefix: str) -> tuple[list[stat_cache.Listed], datetime | None]:
        """The listed objects with size, ETag and LastModified, and the server's time of the
        listing (its first page's Date header; None when absent, which disables caching)."""
        where = f"s3://{self.bucket}/{self.prefix + prefix}"
        listed = []
        listed_at = None
        for page in self._pages("list", where, "list_objects_v2", Prefix=self.prefix + prefix):
            if listed_at is None:
                listed_at = _response_date(page)
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if not is_internal_key(key):
                    stamp = stat_cache.listed_stamp(item.get("LastModified", ""))
                    etag = str(item.get("ETag", "")).strip('"')
                    listed.append(stat_cache.Listed(key, int(item.get("Size", 0)), etag, stamp))
        return listed, listed_at

    def _read_optional(self, bucket_key: str, max_bytes: int) -> bytes:
        """An internal object's bytes (at most `max_bytes` + 1: a longer one is garbled whatever
        follows), or b"" when it is missing or unreadable (logged)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with contextlib.closing(
                self.client.get_object(Bucket=self.bucket, Key=bucket_key)["Body"]
            ) as body:
                data: bytes = body.read(max_bytes + 1)
            return data
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) not in _MISSING_KEY_CODES:
                _log.warning("%s", describe_s3_error("read", f"s3://{self.bucket}/{bucket_key}", exc))
            return b""

    def _write_optional(self, bucket_key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._writable("write", f"s3://{self.bucket}/{bucket_key}")
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=bucket_key, Body=data, ContentType="application/json"
            )
        except (ClientError, BotoCoreError) as exc:
            _log.warning("%s", describe_s3_error("write", f"s3://{self.bucket}/{bucket_key}", exc))

    def _check_bucket(self, full_key: str) -> None:
        """Raise unless the bucket exists (checked once per store: every later 404 is a key's).

        Asked as a one-key listing under the key itself, not HeadBucket: HeadBucket is authorised as
        s3:ListBucket with no `s3:prefix` in its context, so a role whose ListBucket is limited to
        its prefixes (the function's: `s3:prefix` StringLike) is denied it (Amazon S3 API Reference,
        HeadBucket permissions; IAM: a condition on a key the request lacks does not match). A
        listing answers NoSuchBucket with a body.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        if self._bucket_seen:
            return
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=full_key, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in ("404", "NotFound", "NoSuchBucket"):
                raise StoreError(
                    f"head s3://{self.bucket}: the bucket does not exist (NoSuchBucket)"
                ) from exc
            raise StoreError(describe_s3_error("head", f"s3://{self.bucket}", exc)) from exc
        self._bucket_seen = True

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError

        with self.open_read(key) as body:
            try:
                return body.read()
            except BotoCoreError as exc:
                raise StoreError(describe_s3_error("read", self.location(key), exc)) from exc

    def open_read(self, key: str) -> IO[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise StoreError(f"no object {self.location(key)}") from exc
            raise StoreError(describe_s3_error("read", self.location(key), exc)) from exc
        body: IO[bytes] = resp["Body"]  # botocore's StreamingBody reads like a binary file
        return body

    def put_bytes(
        self, key: str, data: bytes, metadata: dict[str, str] | None = None, content_type: str | None = None
    ) -> StoredObject:
        self._writable("put", self.location(key))
        integrity = {META_SHA256: hashlib.sha256(data).hexdigest(), META_SHA256_SIZE: str(len(data))}
        return self._put_object(key, data, {**_clean_metadata(metadata), **integrity}, content_type)

    def _put_object(
        self, key: str, data: bytes, meta: dict[str, str], content_type: str | None
    ) -> StoredObject:
        """One PutObject of `data` with its metadata, integrity included (hashed by the caller)."""
        extra = {"ContentType": content_type} if content_type else {}
        # S3 checks the bytes it got against the sha256 we hashed (and botocore skips its CRC32)
        checksum = base64.b64encode(bytes.fromhex(meta[META_SHA256])).decode()
        resp = self._call(
            "put",
            self.location(key),
            "put_object",
            Bucket=self.bucket,
            Key=self.full_key(key),
            Body=data,
            Metadata=meta,
            ChecksumSHA256=checksum,
            **extra,
        )
        stored = StoredObject(key=key, size=len(data), metadata=meta, etag=resp.get("ETag", "").strip('"'))
        self._wrote(key, stored, resp)
        return stored

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        expected_size: int | None = None,
    ) -> StoredObject:
        self._writable("put", self.location(key))
        # Only counted on the way in: a multipart object needs no sha256 (S3's CRC-32 vouches for
        # it), and a small one is hashed once, joined, by `put_bytes`.
        counted = _Counted(chunks)
        parts = _rechunk(counted, self.part_size)
        buffered: list[bytes] = []
        total = 0
        for piece in parts:
            buffered.append(piece)
            total += len(piece)
            if total > self.multipart_threshold:
                return self._multipart(key, buffered, parts, counted, metadata, content_type, expected_size)
        _check_size(key, counted.size, expected_size)
        return self.put_bytes(key, b"".join(buffered), metadata, content_type)

    def _multipart(
        self,
        key: str,
        head_parts: list[bytes],
        parts: Iterator[bytes],
        counted: _Counted,
        metadata: dict[str, str] | None,
        content_type: str | None,
        expected_size: int | None,
    ) -> StoredObject:
        """Upload straight onto `key`, its metadata given at the start: S3 shows nothing there until
        the completion, and the completion carries the full-object CRC-32, which S3 checks against
        the bytes it assembled. It is sent only once the byte count is the expected one, so the
        key holds the old object or the whole new one with its own metadata, never a mix.

        A sha256 would be known only after the last byte, too late for the metadata; attaching it
        took a server-side copy of every byte (about a quarter of a multipart mirror's time). So a
        multipart object's record is `crc32-size` (see `trusted_integrity`) with S3's CRC-32.
        """
        full_key, where = self.full_key(key), self.location(key)
        meta = _clean_metadata(metadata)
        if expected_size is not None:  # the count the completion is held to
            meta[META_CRC32_SIZE] = str(expected_size)
        extra = {"ContentType": content_type} if content_type else {}
        upload_id = self._call(
            "start upload of",
            where,
            "create_multipart_upload",
            Bucket=self.bucket,
            Key=full_key,
            Metadata=meta,
            ChecksumAlgorithm="CRC32",
            ChecksumType="FULL_OBJECT",
            **extra,
        )["UploadId"]
        uploaded: dict[int, tuple[str, int, int]] = {}  # part number -> ETag, CRC-32, length

        def upload(number: int, body: bytes) -> None:
            crc = zlib.crc32(body)  # in this thread: zlib lets go of the GIL on large buffers
            resp = self._call(
                f"upload part {number} of",
                where,
                "upload_part",
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumCRC32=crc32.as_base64(crc),  # S3 checks the part; botocore computes none
            )
            uploaded[number] = (resp["ETag"], crc, len(body))

        try:
            # Parts go up concurrently while the next ones are read; at most `part_concurrency`
            # parts are in flight, so memory stays bounded whatever the object's size.
            with ThreadPoolExecutor(max_workers=self.part_concurrency) as pool:
                pending: set[Future[None]] = set()
                for number, body in enumerate(_chain(head_parts, parts), start=1):
                    if len(pending) >= self.part_concurrency:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            fut.result()
                    pending.add(pool.submit(upload, number, body))
                for fut in pending:
                    fut.result()
            _check_size(key, counted.size, expected_size)
            whole, done = 0, []
            for number, (etag, crc, length) in sorted(uploaded.items()):
                whole = crc32.combine(whole, crc, length)
                done.append({"PartNumber": number, "ETag": etag, "ChecksumCRC32": crc32.as_base64(crc)})
            resp = self._call(
                "complete upload of",
                where,
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
                ChecksumCRC32=crc32.as_base64(whole),
                ChecksumType="FULL_OBJECT",
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
            raise
        stored = StoredObject(
            key=key, size=counted.size, metadata=meta, etag=resp.get("ETag", "").strip('"') or None
        )
        self._wrote(key, stored, resp)
        return stored

    def delete(self, key: str) -> None:
        where = self.location(key)
        self._writable("delete", where)
        resp = self._call("delete", where, "delete_object", Bucket=self.bucket, Key=self.full_key(key))
        self._wrote(key, None, resp)

    def lease(
        self,
        prefix: str,
        ttl: float,
        *,
        owner: str | None = None,
        wait_seconds: float = 10.0,
        hold: bool = True,
    ) -> Lease:
        """An exclusive lease on `prefix` (see `Lease`), held at `<prefix>.quest-lease.json`."""
        slot = _S3LeaseSlot(self, self.prefix + _check_prefix(prefix) + LEASE_NAME)
        if hold:
            self._writable("lease", slot.where)
        return Lease(slot, ttl, owner=owner, wait_seconds=wait_seconds, hold=hold)

    def cleanup_stale(self, prefix: str, older_than_seconds: float, now: float | None = None) -> list[str]:
        """Abort multipart uploads and delete temp objects under `prefix` older than the grace period.

        Age is taken from the start time in our temp names when there is one (the later of that and
        S3's own), so an upload a sync elsewhere is still streaming is never touched.
        """
        now = time.time() if now is None else now
        full_prefix = self.prefix + _check_prefix(prefix)
        where = f"s3://{self.bucket}/{full_prefix}"
        self._writable("clean up", where)
        removed = []
        for page in self._pages("list uploads in", where, "list_multipart_uploads", Prefix=full_prefix):
            for upload in page.get("Uploads", []):
                started = _started(upload["Key"], upload.get("Initiated"))
                if now - started > older_than_seconds:
                    self._call(
                        "abort upload",
                        f"s3://{self.bucket}/{upload['Key']}",
                        "abort_multipart_upload",
                        Bucket=self.bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    removed.append(
                        f"multipart upload s3://{self.bucket}/{upload['Key']} (started {_iso(started)})"
                    )
        for page in self._pages("list", where, "list_objects_v2", Prefix=full_prefix):
            for item in page.get("Contents", []):
                if f"/{TMP_SEGMENT}/" not in "/" + item["Key"]:
                    continue
                started = _started(item["Key"], item.get("LastModified"))
                if now - started > older_than_seconds:
                    location = f"s3://{self.bucket}/{item['Key']}"
                    self._call("delete", location, "delete_object", Bucket=self.bucket, Key=item["Key"])
                    removed.append(f"temp object {location} (written {_iso(started)})")
        return removed


def _response_date(response: dict[str, Any]) -> datetime | None:
    """When S3 answered, by its clock: the Date header (S3 always sends it; moto's in-process
    mock sends Last-Modified on writes instead, which is never later)."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    header = headers.get("date") or headers.get("last-modified")
    try:
        return email.utils.parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return None


def _started(bucket_key: str, reported: datetime | None) -> float:
    """When an upload/temp object began: the later of S3's time and the one in our temp name."""
    times = [reported.timestamp()] if reported is not None else []
    stamped = _tmp_started(bucket_key.rpartition("/")[2])
    if stamped is not None:
        times.append(stamped)
    return max(times) if times else 0.0


class _S3LeaseSlot:
    """A lease object updated by conditional writes: If-None-Match to create, If-Match to replace."""

    def __init__(self, store: S3Store, bucket_key: str):
        self.store, self.key = store, bucket_key
        self.where = f"s3://{store.bucket}/{bucket_key}"

    def read(self) -> LeaseRead | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.store.client.get_object(Bucket=self.store.bucket, Key=self.key)
            with contextlib.closing(resp["Body"]) as body:
                data: bytes = body.read(state_json.MAX_LEASE_BYTES + 1)  # past the cap: garbled
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise StoreError(describe_s3_error("read lease", self.where, exc)) from exc
        modified = resp.get("LastModified")
        written_at = modified.timestamp() if isinstance(modified, datetime) else None
        return lease_read(data, str(resp["ETag"]), written_at)

    def _put(self, record: dict[str, Any], **condition: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.store.client.put_object(
                Bucket=self.store.bucket,
                Key=self.key,
                Body=json.dumps(record, sort_keys=True).encode(),
                ContentType="application/json",
                **condition,
            )
        except (ClientError, BotoCoreError) as exc:
            # Not written, nothing wrong with the store: a condition that failed (412), a racing
            # conditional write (409 ConditionalRequestConflict: read again), and If-Match on a key
            # that is gone, which AWS answers 404 NoSuchKey and SeaweedFS 412 (both: "not written").
            # https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
            # https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html (If-Match)
            if _error_code(exc) in _PRECONDITION_CODES | {"NoSuchKey"}:
                return None
            raise StoreError(describe_s3_error("write lease", self.where, exc)) from exc
        return str(resp["ETag"])

    def create(self, record: dict[str, Any]) -> str | None:
        return self._put(record, IfNoneMatch="*")

    def replace(self, record: dict[str, Any], version: str) -> str | None:
        return self._put(record, IfMatch=version)


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Regroup arbitrary chunks into pieces of exactly `size` bytes (the last may be shorter).

    Chunks are held in a list and joined once per piece: growing and slicing one bytearray copied
    every byte three or four times, which cost as much CPU as the upload itself.
    """
    held: list[bytes] = []
    count = 0
    for chunk in chunks:
        held.append(chunk)
        count += len(chunk)
        if count < size:
            continue
        data = b"".join(held)
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            yield data[start : start + size]  # the object itself when it is exactly one piece
        held = [data[whole:]] if whole < len(data) else []
        count = len(data) - whole
    if count:
        yield b"".join(held)


def _chain(first: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


def make_s3_client(max_pool_connections: int = 16, session: Any = None) -> Any:
    """An S3 client with standard retries and a connection pool sized for the transfers."""
    from flows.io.aws import aws_client

    return aws_client(
        "s3",
        session=session,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max_pool_connections,
    )
