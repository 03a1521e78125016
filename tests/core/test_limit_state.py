"""Reading Prefect's two BLS limits: only two active, sound limits are shared; nothing reads as
"unlimited". Any JSON the API may answer (hypothesis) gives a decision, never an exception."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core.limit_state import Local, Refuse, Shared, decide, read_limit
from flows.core.names import BLS_CONCURRENCY_LIMIT as CONC
from flows.core.names import BLS_RATE_LIMIT as RATE

R = 2.0


def limit(name: str, size: object = 2, active: object = True, decay: object = 0.0) -> dict[str, object]:
    """A limit as Prefect's `GET /v2/concurrency_limits/{name}` answers it."""
    return {
        "id": "7d5c4c8e-0000-4000-8000-000000000000",
        "name": name,
        "active": active,
        "limit": size,
        "active_slots": 0,
        "slot_decay_per_second": decay,
        "denied_slots": 0,
        "avg_slot_occupancy_seconds": 2.0,
    }


def decision(conc: object, pacer: object, per_second: float = R):
    return decide(read_limit(CONC, conc), read_limit(RATE, pacer), per_second)


def test_two_active_sound_limits_are_shared():
    got = decision(limit(CONC, 1), limit(RATE, 1))
    assert isinstance(got, Shared) and got.concurrent == 1 and got.pacing.slots == 1
    huge = decision(limit(CONC, 10**9), limit(RATE, 10**9))  # the operator's choice: kept
    assert isinstance(huge, Shared) and huge.concurrent == 10**9
    assert isinstance(decision(limit(CONC, decay=None), limit(RATE, decay=None)), Shared)


@pytest.mark.parametrize(
    ("conc", "pacer", "said"),
    [
        (limit(CONC, active=False), limit(RATE), f"{CONC!r} is INACTIVE in Prefect"),
        (limit(CONC), limit(RATE, active=False), f"{RATE!r} is INACTIVE in Prefect"),
        (limit(CONC, 1, False), limit(RATE, 1, False), f"{CONC!r} is INACTIVE and {RATE!r} is INACTIVE"),
        (None, limit(RATE), f"{CONC!r} is missing in Prefect"),
        (limit(CONC), None, f"{RATE!r} is missing in Prefect"),
        (None, None, "missing"),
        (limit(CONC, 0, False), limit(RATE, 0, False), "INACTIVE"),  # Prefect ignores it: not a pause
        (limit(CONC, active=False), limit(RATE, 1, decay=5.0, active=False), "INACTIVE"),
    ],
)
def test_a_missing_or_inactive_limit_leaves_the_own_limits(conc, pacer, said):
    got = decision(conc, pacer)
    assert isinstance(got, Local) and said in got.why


@pytest.mark.parametrize(
    ("conc", "pacer", "said"),
    [
        (limit(CONC, 0), limit(RATE), "is active with 0 slots"),  # Prefect: 422 for every ask
        (limit(CONC), limit(RATE, 0), "is active with 0 slots"),
        (limit(CONC, -1), limit(RATE), "with -1 slots"),
        (limit(CONC, 0), limit(RATE, active=False), "with 0 slots"),  # a pause beats a fallback
        (limit(CONC), limit(RATE, 1, decay=R), "decays (2 slots/s)"),  # an older stack's rate limit
        (limit(CONC, decay=0.5), limit(RATE), "decays"),
        (limit(CONC, "2"), limit(RATE), "'limit' is '2'"),
        (limit(CONC, 2.0), limit(RATE), "'limit' is 2.0"),
        (limit(CONC, True), limit(RATE), "'limit' is True"),
        (limit(CONC, None), limit(RATE), "'limit' is None"),
        (limit(CONC, 2**64), limit(RATE), "more than any database holds"),
        (limit(CONC), limit(RATE, active="yes"), "'active' is 'yes'"),
        (limit(CONC), limit(RATE, active=None), "'active' is None"),
        (limit(CONC), limit(RATE, decay=-1.0), "'slot_decay_per_second' is -1.0"),
        (limit(CONC), limit(RATE, decay=math.nan), "'slot_decay_per_second' is nan"),
        (limit(CONC), limit(RATE, decay="0"), "'slot_decay_per_second' is '0'"),
        (limit(RATE), limit(RATE), "names another limit"),  # a proxy answering with the wrong one
        ({"detail": "Not Found"}, limit(RATE), "names another limit: None"),
        ("<html>login</html>", limit(RATE), "not a limit: '<html>login</html>'"),
        ([limit(CONC)], limit(RATE), "not a limit"),
        (limit(CONC), 42, "not a limit: 42"),
        (limit(CONC, "x" * 500), limit(RATE), "..."),  # quoted short
    ],
)
def test_a_zero_decaying_or_garbled_limit_refuses_in_one_line(conc, pacer, said):
    got = decision(conc, pacer)
    assert isinstance(got, Refuse) and said in got.why, got
    assert "\n" not in got.why and len(got.why) < 400


json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from([CONC, RATE]) | st.text(max_size=5) | st.none(),
        "active": st.booleans() | json,
        "limit": st.integers(-3, 5) | st.integers() | json,
        "slot_decay_per_second": st.sampled_from([0, 0.0, None, 1.0, -0.0]) | json,
    },
)


def _sound(name: str, body: object) -> bool:
    """What alone may be shared: Prefect's answer for an active limit of at least one plain slot."""
    if not isinstance(body, dict) or body.get("name") != name or body.get("active") is not True:
        return False
    size, decay = body.get("limit"), body.get("slot_decay_per_second", 0.0)
    return (
        type(size) is int
        and 1 <= size <= 2**63 - 1
        and (decay is None or (type(decay) in (int, float) and decay == 0))
    )


@settings(max_examples=500, deadline=None)
@given(
    conc=st.none() | json | fields,
    pacer=st.none() | json | fields,
    conc_name=st.booleans(),
    per_second=st.sampled_from([0.5, 1.0, 2.0, 1000.0]),
)
def test_any_answer_gives_a_decision_and_only_sound_active_limits_are_shared(
    conc, pacer, conc_name, per_second
):
    if conc_name and isinstance(conc, dict) and "name" not in conc:
        conc = {**conc, "name": CONC}
    got = decision(conc, pacer, per_second)
    assert isinstance(got, Shared | Local | Refuse)
    assert isinstance(got, Shared) == (_sound(CONC, conc) and _sound(RATE, pacer))
    if isinstance(got, Local | Refuse):
        assert got.why and "\n" not in got.why
