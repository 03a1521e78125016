"""Parsing S3 notifications out of SQS batches: decoding, test events, duplicates, newest wins."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

from flows.core.events import decode_key, parse_body, parse_sqs_event, plan_batch


def s3_record(
    key: str, etag: str = "abc", name: str = "ObjectCreated:Put", bucket: str = "b", t: str = ""
) -> dict:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": t or "2025-01-01T00:00:00.000Z",
        "eventName": name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": 10, "eTag": etag, "sequencer": "0A"},
        },
    }


def sqs_event(*bodies: object) -> dict:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body if isinstance(body, str) else json.dumps(body),
                "eventSource": "aws:sqs",
            }
            for i, body in enumerate(bodies)
        ]
    }


TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2025-01-01T00:00:00Z", "Bucket": "b"}


def test_keys_are_form_decoded_including_encoded_slashes():
    assert decode_key("population/2025+01.json") == "population/2025 01.json"
    assert decode_key("population%2F20250101T000000Z.json") == "population/20250101T000000Z.json"
    assert decode_key(quote_plus("population/a+b c.json")) == "population/a+b c.json"
    msg = parse_body("m", json.dumps({"Records": [s3_record("population%2F20250101T000000Z.json")]}))
    assert msg.created[0].key == "population/20250101T000000Z.json"


def test_test_event_is_skipped_not_failed():
    plan = plan_batch(parse_sqs_event(sqs_event(TEST_EVENT)))
    assert plan.snapshot is None and plan.failed == ()
    assert plan.skipped == {"s3:TestEvent": 1}


def test_accepted_event_names_and_others_ignored():
    names = ["ObjectCreated:Put", "ObjectCreated:Copy", "ObjectCreated:CompleteMultipartUpload"]
    for i, name in enumerate(names):
        key = f"population/2025010{i + 1}T000000Z.json"
        plan = plan_batch(parse_sqs_event(sqs_event({"Records": [s3_record(key, name=name)]})))
        assert plan.snapshot is not None and plan.snapshot.key == key
    removed = s3_record("population/20250101T000000Z.json", name="ObjectRemoved:Delete")
    plan = plan_batch(parse_sqs_event(sqs_event({"Records": [removed]})))
    assert plan.snapshot is None and plan.failed == ()
    assert plan.skipped == {"event ObjectRemoved:Delete": 1}


def test_duplicates_by_bucket_key_etag_make_one_snapshot():
    key = "population/20250101T000000Z.json"
    event = sqs_event(
        {"Records": [s3_record(key, "e1", "ObjectCreated:Put")]},
        {"Records": [s3_record(key, "e1", "ObjectCreated:CompleteMultipartUpload")]},
        {"Records": [s3_record(key, "e1")]},  # at-least-once: the same event again
    )
    plan = plan_batch(parse_sqs_event(event))
    assert plan.snapshot is not None
    assert plan.snapshot.key == key and plan.snapshot.message_ids == ("m0", "m1", "m2")
    assert plan.superseded == ()
    assert plan.skipped == {"duplicate event": 2}


def test_newest_snapshot_wins_and_older_ones_ride_along():
    event = sqs_event(
        {"Records": [s3_record("population/20250102T000000Z.json", "n")]},
        {"Records": [s3_record("population/20250101T000000Z.json", "o")]},
    )
    plan = plan_batch(parse_sqs_event(event))
    assert plan.snapshot.key == "population/20250102T000000Z.json"
    assert [s.key for s in plan.superseded] == ["population/20250101T000000Z.json"]
    assert plan.message_ids_of_run() == ("m0", "m1")


def test_malformed_bodies_fail_alone():
    event = sqs_event(
        "not json {",
        {"hello": "world"},
        [1, 2],
        {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]},
        {"Records": [{"eventSource": "aws:sns"}]},
        {"Records": []},
        {"Records": [s3_record("population/20250101T000000Z.json")]},
        TEST_EVENT,
    )
    messages = parse_sqs_event(event)
    assert [m.error is not None for m in messages] == [True] * 6 + [False, False]
    assert "not JSON" in messages[0].error
    plan = plan_batch(messages)
    assert plan.failed == ("m0", "m1", "m2", "m3", "m4", "m5")
    assert plan.snapshot.key == "population/20250101T000000Z.json"
    assert plan.snapshot.message_ids == ("m6",)


def test_objects_outside_the_store_or_filter_need_no_work():
    event = sqs_event(
        {"Records": [s3_record("root/population/20250101T000000Z.json", bucket="mine")]},
        {"Records": [s3_record("root/population/20250102T000000Z.json", bucket="other")]},
        {"Records": [s3_record("root/bls/pr/pr.data.0.Current", bucket="mine")]},
        {"Records": [s3_record("population/20250103T000000Z.json", bucket="mine")]},
    )
    plan = plan_batch(parse_sqs_event(event), store_bucket="mine", store_prefix="root/")
    assert plan.snapshot.key == "population/20250101T000000Z.json"
    assert plan.snapshot.message_ids == ("m0",)
    assert plan.superseded == () and plan.failed == ()
    assert plan.skipped == {"not a population snapshot of this store": 3}
