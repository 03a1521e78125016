"""The pure mirror plan and its delete guard."""

from __future__ import annotations

import pytest

from flows.sources.bls import ListingEntry
from flows.store import StoredObject
from flows.sync import Action, MassDeleteError, StoredFile, check_delete_guard, plan_sync


def entry(name: str, size: int = 10, when: str = "2024-06-06T08:30") -> ListingEntry:
    return ListingEntry(name, f"http://h/pub/time.series/pr/{name}", size, when)


def stored(name: str, size: int = 10, when: str | None = "2024-06-06T08:30", actual: int | None = None):
    meta = {"upstream-size": str(size), "sha256": "x"}
    if when is not None:
        meta["upstream-last-modified"] = when
    return StoredFile.from_object(
        name, StoredObject(f"bls/pr/{name}", actual if actual is not None else size, meta)
    )


def test_plan_add_update_delete_keep():
    listing = [entry("a"), entry("b", 11), entry("c", when="2024-06-07T08:30"), entry("d"), entry("e")]
    have = {n: stored(n) for n in ("b", "c", "d", "gone")}
    have["e"] = stored("e", when=None)  # mirrored by something that did not record the date
    plan = plan_sync("pr", listing, have)
    assert {i.name: i.action for i in plan.items} == {
        "a": Action.ADD,
        "b": Action.UPDATE,
        "c": Action.UPDATE,
        "d": Action.KEEP,
        "e": Action.UPDATE,
        "gone": Action.DELETE,
    }
    assert plan.counts() == {"add": 1, "update": 3, "delete": 1, "keep": 1}
    assert [i.name for i in plan.transfers] == ["a", "b", "c", "e"]
    assert "size 10 → 11" in plan.of(Action.UPDATE)[0].reason
    assert "keep" in plan.describe() and plan.to_dict()["counts"]["delete"] == 1


def test_stored_size_disagreeing_with_its_metadata_is_refetched():
    plan = plan_sync("pr", [entry("a")], {"a": stored("a", actual=3)})
    assert plan.items[0].action == Action.UPDATE


def test_delete_guard():
    listing = [entry("a")]
    have = {n: stored(n) for n in ("a", "b", "c")}  # 2 of 3 would go
    plan = plan_sync("pr", listing, have)
    with pytest.raises(MassDeleteError, match="2 of 3"):
        check_delete_guard(plan, 0.5)
    check_delete_guard(plan, 0.5, allow_mass_delete=True)
    check_delete_guard(plan, 0.7)
    # 2 of 12 (the real pr change of 2026) is below half.
    twelve = {f"f{i}": stored(f"f{i}") for i in range(12)}
    check_delete_guard(plan_sync("pr", [entry(f"f{i}") for i in range(10)], twelve), 0.5)
    # Nothing mirrored yet: nothing to guard.
    check_delete_guard(plan_sync("pr", [entry("a")], {}), 0.0)
