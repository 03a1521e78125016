"""S3 event notifications arriving through SQS: parse, filter, deduplicate. Pure: no I/O, no Prefect.

What S3 actually sends, and what this module does about it:
- keys are URL-encoded (`quote_plus`: space → `+`, `/` sometimes as `%2F`) → decoded;
- configuring a notification sends one `s3:TestEvent` message → skipped (a success, nothing to do);
- delivery is at-least-once, and a multipart upload can show up as Put + CompleteMultipartUpload
  → deduplicated by (bucket, key, eTag);
- several snapshots in one batch → only the newest is reported on (one reports run per batch);
  only keys `population/<YYYYMMDDTHHMMSSZ>.json` with a real timestamp are snapshots, so a note or a
  copy under population/ can neither wake the reports nor pass for the newest snapshot.
A message whose body is not JSON or not an S3 event is a *failure* of that message only, so the
queue's redrive policy moves it to the DLQ for inspection without failing its neighbours.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from flows.core import names
from flows.core.errors import EventFormatError

ACCEPTED_EVENTS = frozenset(
    {"ObjectCreated:Put", "ObjectCreated:Copy", "ObjectCreated:CompleteMultipartUpload"}
)
TEST_EVENT = "s3:TestEvent"


def is_snapshot_key(key: str) -> bool:
    return names.parse_population_key(key) is not None


@dataclass(frozen=True)
class ObjectCreated:
    """One S3 object-created record, key decoded."""

    bucket: str
    key: str
    etag: str
    event_name: str
    event_time: str = ""
    size: int | None = None
    sequencer: str = ""

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.bucket, self.key, self.etag)


@dataclass(frozen=True)
class Message:
    """One SQS message of a batch, parsed."""

    message_id: str
    created: tuple[ObjectCreated, ...] = ()
    test_event: bool = False
    ignored: tuple[str, ...] = ()  # records of other event types (e.g. ObjectRemoved)
    error: str | None = None  # not JSON / not an S3 event: the message fails


@dataclass(frozen=True)
class Snapshot:
    """A population snapshot to report on: the store key and the messages that announced it."""

    bucket: str
    key: str  # key in the store (store prefix removed)
    etag: str
    message_ids: tuple[str, ...]
    event_time: str = ""  # when S3 says the object was created (ISO 8601, UTC)


@dataclass(frozen=True)
class BatchPlan:
    """What to do with a batch: the newest snapshot (if any) and which messages failed parsing."""

    snapshot: Snapshot | None
    failed: tuple[str, ...]  # message ids that are malformed
    superseded: tuple[Snapshot, ...] = ()  # older snapshots in the same batch, not reported on
    skipped: dict[str, int] = field(default_factory=dict)  # why other messages need no work

    def message_ids_of_run(self) -> tuple[str, ...]:
        """Messages whose success depends on the reports run: the snapshot's and the superseded ones'."""
        ids: list[str] = []
        for snap in ((self.snapshot,) if self.snapshot else ()) + self.superseded:
            ids.extend(i for i in snap.message_ids if i not in ids)
        return tuple(ids)


def decode_key(raw: str) -> str:
    """S3 event keys are form-encoded: `+` is a space and `%2F` a slash."""
    return unquote_plus(raw)


def parse_record(record: Mapping[str, Any]) -> ObjectCreated | str:
    """An S3 record → ObjectCreated, or the event name when it is not an accepted creation."""
    if not isinstance(record, Mapping) or record.get("eventSource") != "aws:s3":
        raise ValueError("a record is not an S3 event record (eventSource != aws:s3)")
    name = str(record.get("eventName", ""))
    if name not in ACCEPTED_EVENTS:
        return name or "(no eventName)"
    s3 = record.get("s3")
    if not isinstance(s3, Mapping):
        raise ValueError("an S3 record has no s3 section")
    bucket, obj = s3.get("bucket"), s3.get("object")
    if not isinstance(bucket, Mapping) or not isinstance(obj, Mapping):
        raise ValueError("an S3 record has no bucket or object")
    if not bucket.get("name") or not obj.get("key"):
        raise ValueError("an S3 record has no bucket name or object key")
    size = obj.get("size")
    return ObjectCreated(
        bucket=str(bucket["name"]),
        key=decode_key(str(obj["key"])),
        etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        event_name=name,
        event_time=str(record.get("eventTime", "")),
        size=int(size) if isinstance(size, int) else None,
        sequencer=str(obj.get("sequencer", "")),
    )


def parse_body(message_id: str, body: Any) -> Message:
    """One SQS message body (the S3 notification JSON) → Message. Never raises."""
    try:
        payload = json.loads(body) if isinstance(body, str | bytes) else body
    except (ValueError, TypeError, RecursionError) as exc:
        return Message(message_id, error=f"body is not JSON: {str(exc)[:200]}")
    if not isinstance(payload, Mapping):
        return Message(message_id, error=f"body is JSON {type(payload).__name__}, not an S3 event object")
    if payload.get("Event") == TEST_EVENT:
        return Message(message_id, test_event=True)
    records = payload.get("Records")
    if not isinstance(records, list) or not records:
        return Message(message_id, error="body is not an S3 event (no Records, not s3:TestEvent)")
    created: list[ObjectCreated] = []
    ignored: list[str] = []
    try:
        for record in records:
            parsed = parse_record(record)
            if isinstance(parsed, ObjectCreated):
                created.append(parsed)
            else:
                ignored.append(parsed)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        return Message(message_id, error=str(exc)[:200])
    return Message(message_id, created=tuple(created), ignored=tuple(ignored))


def parse_sqs_event(event: Mapping[str, Any]) -> list[Message]:
    """The Lambda SQS event (`Records` of `aws:sqs`) → one Message per SQS message.

    A malformed message becomes a failed Message; an event that is not a batch raises EventFormatError.
    """
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        if isinstance(event, Mapping) and records is None:
            return []
        raise EventFormatError(f"the event is not an SQS batch (no `Records` list): {str(event)[:120]}")
    messages = []
    for index, record in enumerate(records):
        message_id = (
            str(record.get("messageId") or f"#{index}") if isinstance(record, Mapping) else f"#{index}"
        )
        body = record.get("body") if isinstance(record, Mapping) else None
        if body is None:
            messages.append(Message(message_id, error="SQS record has no body"))
        else:
            messages.append(parse_body(message_id, body))
    return messages


def store_key(bucket: str, key: str, store_bucket: str | None, store_prefix: str) -> str | None:
    """The store-relative key of an event's object, or None when it lies outside the store."""
    if store_bucket is not None and bucket != store_bucket:
        return None
    if not key.startswith(store_prefix):
        return None
    return key[len(store_prefix) :]


def _newest_last(entry: tuple[ObjectCreated, str, list[str]]) -> tuple[str, str, str, str]:
    created, key, _ = entry
    return (names.parse_population_key(key) or "", key, created.event_time, created.sequencer)


def plan_batch(
    messages: Iterable[Message],
    store_bucket: str | None = None,
    store_prefix: str = "",
    wanted: Callable[[str], bool] = is_snapshot_key,
) -> BatchPlan:
    """Decide the batch: dedupe by (bucket, key, eTag), keep population snapshots, newest wins.

    Newest is the latest key timestamp (`names.parse_population_key`); event time and sequencer only
    break ties between events for the same key.

    `store_bucket`/`store_prefix` say which objects belong to the store the reports read
    (None bucket: any); objects elsewhere or not matching `wanted` need no work.
    """
    failed: list[str] = []
    skipped: dict[str, int] = {}
    by_identity: dict[tuple[str, str, str], tuple[ObjectCreated, str, list[str]]] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for message in messages:
        if message.error is not None:
            failed.append(message.message_id)
            continue
        if message.test_event:
            skip("s3:TestEvent")
            continue
        for name in message.ignored:
            skip(f"event {name}")
        for created in message.created:
            key = store_key(created.bucket, created.key, store_bucket, store_prefix)
            if key is None or not wanted(key):
                skip("not a population snapshot of this store")
                continue
            entry = by_identity.get(created.identity)
            if entry is None:
                by_identity[created.identity] = (created, key, [message.message_id])
            else:
                skip("duplicate event")
                if message.message_id not in entry[2]:
                    entry[2].append(message.message_id)

    snapshots = [
        Snapshot(bucket=c.bucket, key=key, etag=c.etag, message_ids=tuple(ids), event_time=c.event_time)
        for c, key, ids in sorted(by_identity.values(), key=_newest_last)
    ]
    if not snapshots:
        return BatchPlan(snapshot=None, failed=tuple(failed), skipped=skipped)
    return BatchPlan(
        snapshot=snapshots[-1], failed=tuple(failed), superseded=tuple(snapshots[:-1]), skipped=skipped
    )
