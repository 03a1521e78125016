"""Prefect's two BLS limits read as data: which limits a process keeps to, or why it sends nothing.

Prefect grants every ask on an inactive limit (it only counts active ones) and answers an ask on a
missing one with no limits, so a limit that reads as anything but active and sound must never be
taken for "limited". This module is pure: the two bodies the API gave (None: it answered 404) and
this process's R in, one `Decision` out:

- `Shared`: both limits active, at least one slot each, neither decaying: Prefect's limits hold
  across every process (on top of the process's own, which always hold).
- `Local`: a limit is missing or inactive: the process keeps its own N and R and says why.
- `Refuse`: an active limit of 0 or less (Prefect answers every ask with 422: nothing could ever
  be sent), a decaying one (its slots free before the answer's hold: it cannot keep R), or an
  answer that is not a limit. No request is sent and the line says what to fix: an answer that
  cannot be read may stand for limits every other process keeps, and guessing "local" would add
  this process's R to theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flows.core.pacing import Pacing, pacing_for

State = Literal["ok", "missing", "inactive", "zero", "decaying", "garbled"]
FIX = "`pulumi up` sets both from the stack's config"
SHOWN = 60  # characters of an odd value quoted in a line
MOST_SLOTS = 2**63 - 1  # a limit's size beyond any database integer is not Prefect's answer


@dataclass(frozen=True)
class Reading:
    """One limit as the API holds it: its state, its size when it has one, what is odd about it."""

    name: str
    state: State
    limit: int = 0
    odd: str = ""


@dataclass(frozen=True)
class Shared:
    concurrent: int
    pacing: Pacing

    def describe(self) -> str:
        return f"{self.concurrent} concurrent, {self.pacing.describe()}"


@dataclass(frozen=True)
class Local:
    why: str


@dataclass(frozen=True)
class Refuse:
    why: str


Decision = Shared | Local | Refuse


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def read_limit(name: str, body: object) -> Reading:
    """The state of limit `name` from the API's answer (None: not found); never raises."""
    if body is None:
        return Reading(name, "missing")
    if not isinstance(body, dict):
        return Reading(name, "garbled", odd=f"the answer is not a limit: {_shown(body)}")
    if body.get("name") != name:
        return Reading(name, "garbled", odd=f"the answer names another limit: {_shown(body.get('name'))}")
    active, limit = body.get("active"), body.get("limit")
    decay = body.get("slot_decay_per_second", 0.0)
    decay = 0.0 if decay is None else decay
    if not isinstance(active, bool):
        return Reading(name, "garbled", odd=f"'active' is {_shown(active)}")
    if isinstance(limit, bool) or not isinstance(limit, int):
        return Reading(name, "garbled", odd=f"'limit' is {_shown(limit)}")
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not math.isfinite(decay) or decay < 0:
        return Reading(name, "garbled", odd=f"'slot_decay_per_second' is {_shown(decay)}")
    if abs(limit) > MOST_SLOTS:
        return Reading(name, "garbled", odd=f"'limit' is {_shown(limit)}, more than any database holds")
    if not active:
        return Reading(name, "inactive", limit)
    if limit < 1:
        return Reading(name, "zero", limit)
    if decay > 0:
        return Reading(name, "decaying", limit, odd=f"{decay:g} slots/s")
    return Reading(name, "ok", limit)


def decide(concurrency: Reading, pacer: Reading, per_second: float) -> Decision:
    """What a process with R = `per_second` keeps to, given the two limits as read.

    Anything that would stop every request or cannot be read refuses first; then a missing or
    inactive limit means the process's own limits; only two sound, active limits are shared.
    """
    both = (concurrency, pacer)
    for reading in both:
        if reading.state == "garbled":
            return Refuse(f"the Prefect limit {reading.name!r} does not read as a limit ({reading.odd})")
    for reading in both:
        if reading.state == "zero":
            return Refuse(
                f"the Prefect limit {reading.name!r} is active with {reading.limit} slots: no request to"
                f" BLS could ever be sent; give it at least 1 slot, or make it inactive ({FIX})"
            )
        if reading.state == "decaying":
            return Refuse(
                f"the Prefect limit {reading.name!r} decays ({reading.odd}): it must be a plain limit"
                f" of slots held after each answer; {FIX}"
            )
    gone = [
        f"{r.name!r} is {'INACTIVE' if r.state == 'inactive' else 'missing'}" for r in both if r.state != "ok"
    ]
    if gone:
        return Local(" and ".join(gone) + " in Prefect")
    return Shared(concurrency.limit, pacing_for(per_second, pacer.limit))
