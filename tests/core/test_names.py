"""The shared names: key builders, the snapshot key rule, the timestamp format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from flows.core import names


def test_keys_are_built_from_the_shared_prefixes():
    assert names.bls_key("pr", "pr.data.0.Current") == "bls/pr/pr.data.0.Current"
    assert names.bls_survey_prefix("pr") == "bls/pr/"
    assert names.population_key("20250101T000000Z") == "population/20250101T000000Z.json"
    assert names.reports_prefix("20250101T000000Z") == "reports/20250101T000000Z/"
    assert all(p.endswith("/") for p in names.DATA_PREFIXES)


def test_timestamp_is_utc_and_sortable():
    local = datetime(2025, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert names.timestamp(local) == "20241231T233000Z"
    a, b = (
        names.timestamp(datetime(2025, 1, 2, tzinfo=UTC)),
        names.timestamp(datetime(2025, 1, 10, tzinfo=UTC)),
    )
    assert a < b and names.parse_population_key(names.population_key(a)) == a


@pytest.mark.parametrize(
    "key",
    [
        "population/manual-note.json",
        "population/latest.json",
        "population/20251399T000000Z.json",  # no month 13
        "population/20250101T000000Z.json.bak",
        "population/sub/20250101T000000Z.json",
        "reports/20250101T000000Z.json",
        "population/20250101T000000Z.JSON",
    ],
)
def test_only_real_snapshot_keys_count(key):
    assert names.parse_population_key(key) is None


def test_the_notification_filter_admits_more_than_the_snapshot_rule():
    """S3 filters by prefix and suffix only; the flows then apply the stricter snapshot rule."""
    assert names.is_population_key("population/manual-note.json")
    assert names.parse_population_key("population/manual-note.json") is None
