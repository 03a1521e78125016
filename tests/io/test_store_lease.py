"""Issue 9: two syncs of one store prefix never interleave — a lease in the store, with expiry."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.core.errors import LeaseHeld, LeaseLost, StoreError
from flows.io.store import Lease, LocalStore, S3Store
from flows.io.store.lease import CLOCK_SKEW_SECONDS


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    request.getfixturevalue("s3_bucket")
    return S3Store("quest-test", "root", client=request.getfixturevalue("s3_client"))


def killed_holder(store, prefix: str, expires_in: float, owner: str = "killed-host pid 1") -> None:
    """The record a holder leaves when it dies: nobody renews or releases it."""
    slot = store.lease(prefix, 60).slot
    assert slot.create({"owner": owner, "token": "dead", "expires": time.time() + expires_in}) is not None


def test_only_one_of_many_concurrent_writers_holds_the_lease(store):
    inside, overlaps, entered = [0], [], []
    lock = threading.Lock()

    def sync(i: int) -> None:
        with store.lease("bls/pr/", 30, owner=f"writer {i}", wait_seconds=20):
            with lock:
                inside[0] += 1
                overlaps.append(inside[0])
                entered.append(i)
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(sync, range(4)))
    assert sorted(entered) == [0, 1, 2, 3]
    assert max(overlaps) == 1


def test_a_held_lease_refuses_a_second_sync_with_who_and_until_when(store):
    with store.lease("bls/pr/", 30, owner="sync A"):
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as info, store.lease("bls/pr/", 30, owner="sync B", wait_seconds=0.3):
            pass
        assert 0.25 < time.monotonic() - started < 5  # waited (bounded), then refused
    message = str(info.value)
    assert "\n" not in message and "sync A" in message and "until 20" in message
    assert ".quest-lease.json" in message
    assert isinstance(info.value, StoreError)
    with store.lease("bls/pr/", 30, owner="sync B", wait_seconds=0):  # released: free again
        pass


def test_leases_on_other_prefixes_do_not_conflict_and_stay_out_of_listings(store):
    store.put_bytes("bls/pr/a", b"1")
    with store.lease("bls/pr/", 30), store.lease("bls/cu/", 30, wait_seconds=0):
        assert store.list_keys() == ["bls/pr/a"]
    assert store.list_keys("bls/pr/") == ["bls/pr/a"]


def test_a_waiting_sync_gets_the_lease_when_the_holder_finishes(store):
    release = threading.Event()

    def holder() -> None:
        with store.lease("bls/pr/", 30, owner="first"):
            release.set()
            time.sleep(0.4)

    thread = threading.Thread(target=holder)
    thread.start()
    release.wait(5)
    with store.lease("bls/pr/", 30, owner="second", wait_seconds=10):
        assert not thread.is_alive()  # entered only after the first released
    thread.join()


def test_the_lease_of_a_killed_sync_is_taken_over_once_expired(store):
    killed_holder(store, "bls/pr/", expires_in=0.5)
    with pytest.raises(LeaseHeld, match="killed-host"):
        store.lease("bls/pr/", 30, wait_seconds=0).acquire()
    with store.lease("bls/pr/", 30, owner="next sync", wait_seconds=5) as lease:
        record, _ = lease.slot.read()
        assert record["owner"] == "next sync" and record["token"] == lease.token


def test_a_held_lease_is_renewed_past_its_ttl(store):
    with store.lease("bls/pr/", 0.6, owner="long sync") as lease:
        time.sleep(1.5)  # more than twice the ttl
        with pytest.raises(LeaseHeld, match="long sync"):
            store.lease("bls/pr/", 0.6, wait_seconds=0).acquire()
        assert lease.slot.read()[0]["expires"] > time.time()
    with store.lease("bls/pr/", 0.6, wait_seconds=0):
        pass


def test_a_holder_that_lost_its_lease_fails_instead_of_finishing_quietly(store):
    lease = store.lease("bls/pr/", 0.6, owner="stalled")
    lease.acquire()
    lease._stop.set()  # the holder stalls: no renewals
    lease._thread.join()
    lease._stop.clear()
    time.sleep(0.7)
    with store.lease("bls/pr/", 30, owner="taker", wait_seconds=0):
        lease._thread = threading.Thread(target=lease._renew_loop)  # it wakes up and renews
        lease._thread.start()
        time.sleep(0.4)
        with pytest.raises(LeaseLost, match="taken over"):
            lease.__exit__(None, None, None)
        assert lease.slot.read()[0]["owner"] == "taker"  # releasing never touched the taker's lease


def test_a_conditional_write_that_landed_before_its_retry_counts_as_acquired(store):
    lease = store.lease("bls/pr/", 30, owner="me", wait_seconds=0)
    lease.slot.create(lease._record(time.time() + 30))  # the first attempt landed, its answer was lost
    with lease:
        assert lease.slot.read()[0]["token"] == lease.token


def test_a_dry_run_lease_holds_nothing(store):
    with store.lease("bls/pr/", 30, hold=False), store.lease("bls/pr/", 30, wait_seconds=0):
        pass


@pytest.mark.parametrize("prefix", ["bls/pr", "/bls/", "bls//", "bls/.quest-tmp/"])
def test_lease_prefix_is_checked(store, prefix):
    with pytest.raises(StoreError, match="invalid"):
        store.lease(prefix, 30)


def test_a_holder_past_its_own_expiry_may_not_take_irreversible_steps(store):
    """A process paused longer than the ttl (renewals not written) must not delete anything after it."""
    now = [1000.0]
    lease = Lease(store.lease("bls/pr/", 30).slot, 30, owner="paused", wait_seconds=0, clock=lambda: now[0])
    with lease:
        lease.check()  # fresh: fine
        now[0] += 29.0
        lease.check()  # still inside the expiry it wrote
        now[0] += 2.0  # paused past it: another sync may own the survey now
        with pytest.raises(LeaseLost, match="expired while held"):
            lease.check()
        now[0] -= 31.0  # back inside, so leaving the block releases cleanly


# --------------------------------------------------------------------------- issue 27: hostile records


def plant(store, prefix: str, data: bytes) -> None:
    """Any bytes where the lease record of `prefix` belongs (as anyone with write access could)."""
    slot = store.lease(prefix, 60).slot
    if isinstance(store, S3Store):
        store.client.put_object(Bucket=store.bucket, Key=slot.key, Body=data)
    else:
        slot.path.parent.mkdir(parents=True, exist_ok=True)
        slot.path.write_bytes(data)


def record(expires: str) -> bytes:
    return ('{"owner": "forger", "token": "t", "expires": ' + expires + "}").encode()


GARBLED = {
    "NaN": record("NaN"),
    "Infinity": record("Infinity"),
    "-Infinity": record("-Infinity"),
    "a string": record('"2999-01-01"'),
    "a bool": record("true"),
    "null": record("null"),
    "negative": record("-1e300"),
    "an object": record('{"at": 1e300}'),
    "digits past Python's limit": record("1" + "0" * 5000),
    "nested 100k deep": b'{"expires": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "invalid UTF-8": b'{"owner": "\xff\xfe", "expires": 1e300}',
    "duplicate keys": b'{"expires": 0, "expires": 1e300}',
    "a list": b"[1e300]",
    "over the cap": b'{"expires": 1e300, "pad": "' + b" " * (1024 * 1024) + b'"}',
    "empty": b"",
}


@pytest.mark.parametrize("name", list(GARBLED))
def test_a_garbled_lease_reads_as_expired_and_is_logged_once(store, name, caplog):
    plant(store, "bls/pr/", GARBLED[name])
    with (
        caplog.at_level("WARNING", logger="flows.io.store.lease"),
        store.lease("bls/pr/", 30, owner="next sync", wait_seconds=0) as lease,
    ):
        assert lease.slot.read()[0]["owner"] == "next sync"
    lines = [r.getMessage() for r in caplog.records if r.name == "flows.io.store.lease"]
    assert len(lines) == 1 and "\n" not in lines[0] and "read as expired" in lines[0]


@pytest.mark.parametrize("expires", ["1e300", "1" + "0" * 400, "1e12"])
def test_an_expiry_past_belief_lapses_one_ttl_after_its_write(store, expires, caplog):
    """Not believed (it never expired), nor taken over at once: it may be a live holder's with a
    clock far ahead. It expires one ttl after the store says it was written."""
    plant(store, "bls/pr/", record(expires))
    with pytest.raises(LeaseHeld) as info, store.lease("bls/pr/", 30, wait_seconds=0):
        pass
    message = str(info.value)
    assert "forger" in message and "\n" not in message
    assert f"until {time.strftime('%Y', time.gmtime())}" in message  # a year of ours, not 1e300's
    started = time.monotonic()
    with store.lease("bls/pr/", 1.5, owner="next sync", wait_seconds=10):  # ttl 1.5: lapses 1.5 s on
        pass
    assert time.monotonic() - started < 8
    assert any("further out than any holder writes" in r.getMessage() for r in caplog.records)


def test_a_holder_with_a_clock_a_little_ahead_is_believed(store):
    killed_holder(store, "bls/pr/", expires_in=30 + 40)  # inside ttl + skew
    with pytest.raises(LeaseHeld):
        store.lease("bls/pr/", 30, wait_seconds=0).acquire()


def test_the_holders_name_in_the_refusal_is_one_short_line(store):
    killed_holder(store, "bls/pr/", expires_in=20, owner="evil\nforged line " + "x" * 5000)
    with pytest.raises(LeaseHeld) as info:
        store.lease("bls/pr/", 30, wait_seconds=0).acquire()
    assert "\n" not in str(info.value) and len(str(info.value)) < 600


@given(st.binary(max_size=512), st.floats(0, 2e9), st.one_of(st.none(), st.floats(-1e20, 1e20)))
def test_any_record_bytes_give_a_sane_expiry(data, now, written_at):
    from flows.io.store.lease import believed_expiry, lease_read

    read = lease_read(data, "v", written_at)
    expires, problem = believed_expiry(read, now, 30.0)
    assert math.isfinite(expires)
    assert expires <= max(now + 30.0 + CLOCK_SKEW_SECONDS, (written_at or 0.0) + 30.0)
    assert problem is None or "\n" not in problem


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
    ),
    st.floats(0, 2e9),
)
def test_any_expires_value_gives_a_sane_expiry(value, now):
    from flows.io.store.lease import LeaseRead, believed_expiry

    expires, problem = believed_expiry(LeaseRead({"expires": value}, "v", now - 5), now, 30.0)
    assert math.isfinite(expires) and expires <= now + 30.0 + CLOCK_SKEW_SECONDS
    assert problem is None or "\n" not in problem


@pytest.mark.parametrize(
    "garbage", [b"{" * 100_000, b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, b"\xff\xfe", b"[]"]
)
def test_a_garbled_local_metadata_sidecar_reads_as_no_metadata(tmp_path, garbage, caplog):
    """The local store's sidecars are state objects too (same reader; not a lease, kept here with them)."""
    store = LocalStore(tmp_path / "store")
    store.put_bytes("bls/pr/a", b"aaa")
    store._meta_path("bls/pr/a").write_bytes(garbage)
    found = store.head("bls/pr/a")
    assert found is not None and found.size == 3 and found.metadata == {}
    assert any("metadata sidecar" in r.getMessage() for r in caplog.records)
