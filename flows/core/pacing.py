"""How R requests a second is kept as BLS counts them: paced from answers, not from grants.

A request reaches BLS at some instant between the moment it is sent and the moment its answer
(the response's headers) comes back; nothing on the client knows that instant more exactly. Two
requests granted 1/R apart can therefore reach BLS much closer: the first one's request line is
read late (a busy server thread, a slow network in), the next on time. A token bucket timed from
the grants (Prefect's rate limit, which is also timed by its database transaction's start, not
its commit) let `scale_bench` see 3 requests in one second at R=2, with 15% headroom.

The rule here is sound whatever that instant: a request holds one of `K` pacer slots from before it
is sent until at least a second after its answer (or its failure). Through one slot, the next
request is sent only after that, so it reaches BLS more than a second after the previous one did:
no slot carries two requests in any second, so all `K` carry at most `K`. `K` is R rounded up,
and each slot is held `max(1 s, K / R)`, so the average is R too (R = 0.5: one slot, 2 s; R = 1.5:
two slots, 1.33 s each; R = 2: two slots, 1 s). Across processes `K` is the Prefect limit's size,
which every process shares: a process whose own R is higher still gets at most `K` a second.

Compared with spacing by grants, a slot's cycle is longer by the time to an answer (a few ms on
loopback; tens to hundreds on the internet): that is the price of the guarantee.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from flows.core.errors import PolitenessLimitError


@dataclass(frozen=True)
class Pacing:
    """`slots` pacer slots, each held until `hold_seconds` after its request's answer."""

    slots: int
    hold_seconds: float

    @property
    def per_second(self) -> float:
        return self.slots / self.hold_seconds

    def describe(self) -> str:
        return f"{self.per_second:g}/s: {self.slots} paced, each {self.hold_seconds:g} s after its answer"


def pacer_slots(per_second: float) -> int:
    """K for R: R rounded up (at least 1), the most requests that may start in one second."""
    if isinstance(per_second, bool) or not isinstance(per_second, int | float):
        raise PolitenessLimitError(f"requests per second to BLS must be a number, got {per_second!r}")
    if not (per_second > 0 and math.isfinite(per_second)):
        raise PolitenessLimitError(f"requests per second to BLS must be > 0 and finite, got {per_second!r}")
    return max(1, math.ceil(per_second))


def pacing_for(per_second: float, slots: int | None = None) -> Pacing:
    """The pacing for this process's R, with `slots` (the shared Prefect limit's size) or its own K.

    Each slot is held `max(1 s, K / R)` after its answer: never less than a second, so `K` bounds
    every second whatever R says; longer when R asks for less than `K` a second. A shared limit
    larger than the process's own K (raised in the UI) holds its slots as the own pacer does: the
    process's own pacer keeps its R (`flows.io.limits`), and a hold of K / R would keep a slot, its
    freeing thread and so the process alive for days at a huge K. A pacer of no slots would never
    send: one line, not a hang.
    """
    own = pacer_slots(per_second)
    if slots is None:
        slots = own
    elif isinstance(slots, bool) or not isinstance(slots, int):
        raise PolitenessLimitError(f"a BLS pacer's size must be a whole number of slots, got {slots!r}")
    elif slots < 1:
        raise PolitenessLimitError(f"a BLS pacer needs at least 1 slot, got {slots}: nothing could be sent")
    return Pacing(slots, max(1.0, min(slots, own) / float(per_second)))


@dataclass
class PacerBook:
    """The pacer's slots in one process, on a clock the caller passes (pure: no waiting here)."""

    pacing: Pacing
    unanswered: int = 0  # slots held by requests not answered yet
    frees: list[float] = field(default_factory=list)  # a heap: when each answered slot frees

    def take(self, now: float) -> float:
        """0.0 when a slot was taken; else the seconds until the next one frees (inf: none answered)."""
        while self.frees and self.frees[0] <= now:
            heapq.heappop(self.frees)
        if self.unanswered + len(self.frees) < self.pacing.slots:
            self.unanswered += 1
            return 0.0
        return self.frees[0] - now if self.frees else math.inf

    def answered(self, now: float) -> None:
        """A request holding a slot has its answer (or failed): the slot frees after the hold."""
        if self.unanswered < 1:
            raise ValueError("no request holds a pacer slot")
        self.unanswered -= 1
        heapq.heappush(self.frees, now + self.pacing.hold_seconds)
