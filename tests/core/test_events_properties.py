"""Snapshot keys and the S3/SQS event parser on random and hostile input: only real snapshot keys count,
the newest by timestamp wins, and nothing but the project's own errors ever escapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.core import names
from flows.core.errors import EventFormatError, QuestError
from flows.core.events import Message, ObjectCreated, parse_body, parse_sqs_event, plan_batch
from flows.core.names import parse_population_key
from flows.reports import newest_population_key

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    "key, ts",
    [
        ("population/20250101T000000Z.json", "20250101T000000Z"),
        ("population/20241231T235959Z.json", "20241231T235959Z"),
        ("population/manual-note.json", None),
        ("population/latest.json", None),
        ("population/20251399T000000Z.json", None),  # month 13
        ("population/20250101T246000Z.json", None),
        ("population/2025111T000000Z.json", None),  # strptime alone would take 1 digit for the month
        ("population/20250101T000000Z.json.bak", None),
        ("population/x/20250101T000000Z.json", None),
        ("root/population/20250101T000000Z.json", None),
        ("population/20250101T000000Z.JSON", None),
        ("population/２０２５0101T000000Z.json", None),
    ],
)
def test_parse_population_key(key, ts):
    assert parse_population_key(key) == ts


def test_newest_snapshot_is_by_timestamp_and_ignores_other_keys():
    """Issue 9: `population/manual-note.json` sorted after the snapshots and was taken as newest."""
    keys = [
        "population/20250101T000000Z.json",
        "population/manual-note.json",
        "population/20250301T000000Z.json",
        "population/zz.json",
        "population/20251399T000000Z.json",
        "population/20250201T000000Z.json",
    ]
    assert newest_population_key(keys) == "population/20250301T000000Z.json"
    assert newest_population_key(["population/manual-note.json"]) is None


def record(key: str, etag: str = "e", t: str = "2025-01-01T00:00:00.000Z") -> dict:
    return {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": t,
        "s3": {"bucket": {"name": "b"}, "object": {"key": key, "eTag": etag, "size": 1, "sequencer": "0A"}},
    }


def test_batch_plan_takes_only_snapshot_keys_and_the_newest_timestamp():
    event = {
        "Records": [
            {"messageId": f"m{i}", "body": json.dumps({"Records": [record(k, t=t)]})}
            for i, (k, t) in enumerate(
                [
                    ("population/20250102T000000Z.json", "2025-01-02T00:00:00.000Z"),
                    ("population/manual-note.json", "2025-02-01T00:00:00.000Z"),  # created later, still no
                    ("population/20250101T000000Z.json", "2025-03-01T00:00:00.000Z"),
                ]
            )
        ]
    }
    plan = plan_batch(parse_sqs_event(event))
    assert plan.snapshot is not None and plan.snapshot.key == "population/20250102T000000Z.json"
    assert [s.key for s in plan.superseded] == ["population/20250101T000000Z.json"]
    assert plan.skipped == {"not a population snapshot of this store": 1}


@FAST
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)))
def test_every_real_timestamp_round_trips(when):
    ts = names.timestamp(when.replace(tzinfo=UTC))
    assert parse_population_key(names.population_key(ts)) == ts


@FAST
@given(st.text(max_size=40))
def test_parse_population_key_never_raises(key):
    ts = parse_population_key(key)
    assert ts is None or names.population_key(ts) == key


json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)
keys = st.one_of(
    st.builds(lambda d: names.population_key(names.timestamp(d.replace(tzinfo=UTC))), st.datetimes()),
    st.text(max_size=30),
    st.just("population/manual-note.json"),
)
records = st.one_of(
    st.builds(record, keys, st.text(max_size=4), st.text(max_size=24)),
    st.dictionaries(st.sampled_from(["eventSource", "eventName", "s3", "eventTime"]), json_values),
    json_values,
)
bodies = st.one_of(
    st.builds(lambda rs: json.dumps({"Records": rs}), st.lists(records, max_size=4)),
    st.builds(json.dumps, json_values),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.just("[" * 50_000),
    json_values,
)
sqs_records = st.one_of(
    st.fixed_dictionaries({"messageId": st.text(max_size=6), "body": bodies}),
    st.dictionaries(st.sampled_from(["messageId", "body", "receiptHandle"]), json_values, max_size=3),
    json_values,
)
events = st.one_of(
    st.builds(lambda rs: {"Records": rs}, st.lists(sqs_records, max_size=5)),
    json_values,
)


@FAST
@given(events)
def test_sqs_events_parse_to_messages_or_a_quest_error(event):
    try:
        messages = parse_sqs_event(event)
    except EventFormatError:
        return
    assert all(isinstance(m, Message) for m in messages)
    plan = plan_batch(messages)
    for snapshot in ((plan.snapshot,) if plan.snapshot else ()) + plan.superseded:
        assert parse_population_key(snapshot.key) is not None
    if plan.snapshot is not None:
        newest = max(parse_population_key(s.key) or "" for s in plan.superseded + (plan.snapshot,))
        assert parse_population_key(plan.snapshot.key) == newest
    assert set(plan.failed) <= {m.message_id for m in messages}


@FAST
@given(bodies)
def test_a_message_body_never_raises(body):
    message = parse_body("m", body)
    assert message.error is None or isinstance(message.error, str)
    assert all(isinstance(c, ObjectCreated) for c in message.created)


def test_an_event_that_is_not_a_batch_is_a_quest_error():
    assert parse_sqs_event({}) == []
    for event in ([1, 2], "Records", {"Records": "x"}, {"Records": {"a": 1}}, None):
        with pytest.raises(QuestError, match="not an SQS batch"):
            parse_sqs_event(event)
