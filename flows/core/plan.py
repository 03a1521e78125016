"""The mirror plan: upstream listing × stored objects → add / update / delete / keep (pure).

A file is kept — no GET, no PUT — when its listed size and listed last-modified equal what the
stored object's metadata recorded at the time it was mirrored, the stored size agrees, and the
stored object's integrity metadata can be trusted (`flows.core.objects.trusted_integrity`). An
object whose integrity record is missing or contradicts it (e.g. left by a crash or by two syncs
racing) is transferred again rather than kept forever.
Deletions are guarded: a plan removing more than the max fraction of the mirrored files is
refused unless explicitly allowed, since a truncated listing must not empty the mirror.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum

from flows.core.errors import MassDeleteError
from flows.core.listing import ListingEntry
from flows.core.objects import (
    META_UPSTREAM_LAST_MODIFIED,
    META_UPSTREAM_SIZE,
    StoredObject,
    trusted_integrity,
)


class Action(StrEnum):
    ADD = "add"
    UPDATE = "update"
    DELETE = "delete"
    KEEP = "keep"


@dataclass(frozen=True)
class StoredFile:
    """What the plan needs to know about a mirrored object."""

    name: str
    size: int
    upstream_size: int | None
    upstream_last_modified: str | None
    integrity: str | None  # None when missing or not to be trusted: the file is then transferred again

    @classmethod
    def from_object(cls, name: str, obj: StoredObject) -> StoredFile:
        raw_size = obj.metadata.get(META_UPSTREAM_SIZE)
        return cls(
            name=name,
            size=obj.size,
            upstream_size=int(raw_size) if raw_size and raw_size.isascii() and raw_size.isdigit() else None,
            upstream_last_modified=obj.metadata.get(META_UPSTREAM_LAST_MODIFIED),
            integrity=trusted_integrity(obj),
        )


@dataclass(frozen=True)
class PlanItem:
    action: Action
    name: str
    size: int  # listed size for add/update/keep, stored size for delete
    reason: str
    url: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class SyncPlan:
    survey: str
    items: tuple[PlanItem, ...]

    def of(self, action: Action) -> list[PlanItem]:
        return [i for i in self.items if i.action == action]

    @property
    def transfers(self) -> list[PlanItem]:
        return [i for i in self.items if i.action in (Action.ADD, Action.UPDATE)]

    @property
    def stored_count(self) -> int:
        return sum(1 for i in self.items if i.action in (Action.UPDATE, Action.DELETE, Action.KEEP))

    def counts(self) -> dict[str, int]:
        return {a.value: len(self.of(a)) for a in Action}

    def to_dict(self) -> dict[str, object]:
        return {"survey": self.survey, "counts": self.counts(), "items": [asdict(i) for i in self.items]}

    def describe(self) -> str:
        """Human-readable plan, one line per file (for `quest sync --dry-run`)."""
        c = self.counts()
        lines = [
            f"{self.survey}: {c['add']} add, {c['update']} update, {c['delete']} delete, {c['keep']} keep"
        ]
        for item in self.items:
            lines.append(f"  {item.action.value:<6} {item.name:<32} {item.size:>12}  {item.reason}")
        return "\n".join(lines)


def plan_sync(
    survey: str,
    listing: Iterable[ListingEntry],
    stored: Mapping[str, StoredFile],
    held: Iterable[str] = (),
) -> SyncPlan:
    """Compare the listing with the stored files (keyed by file name).

    `held` names files the listing shows in a row it could not read: their stored copies are kept
    as they are (neither replaced nor deleted) until a later listing reads them again.
    """
    items: list[PlanItem] = []
    listed = {e.name: e for e in listing}
    hold = set(held) - set(listed)
    for name in sorted(listed):
        entry = listed[name]
        have = stored.get(name)
        if have is None:
            items.append(
                PlanItem(Action.ADD, name, entry.size, "new upstream", entry.url, entry.last_modified)
            )
            continue
        changes = _changes(have, entry)
        action = Action.UPDATE if changes else Action.KEEP
        reason = "; ".join(changes) if changes else "unchanged"
        items.append(PlanItem(action, name, entry.size, reason, entry.url, entry.last_modified))
    for name in sorted(set(stored) - set(listed)):
        if name in hold:
            items.append(PlanItem(Action.KEEP, name, stored[name].size, "listing row unreadable; kept as is"))
        else:
            items.append(PlanItem(Action.DELETE, name, stored[name].size, "no longer listed"))
    return SyncPlan(survey, tuple(items))


def _changes(have: StoredFile, entry: ListingEntry) -> list[str]:
    """Why the stored file must be transferred again (empty: it can be kept)."""
    changes = []
    if have.integrity is None:
        changes.append("stored object has no trustworthy integrity metadata (sha256 or S3 CRC-32)")
    if have.upstream_size is not None and have.upstream_size != have.size:
        changes.append(f"stored size {have.size} ≠ recorded upstream size {have.upstream_size}")
    if have.upstream_size != entry.size:
        changes.append(f"size {have.upstream_size} → {entry.size}")
    if have.upstream_last_modified != entry.last_modified:
        changes.append(f"listed {have.upstream_last_modified} → {entry.last_modified}")
    if not changes and have.size != entry.size:
        changes.append(f"stored size {have.size} ≠ listed {entry.size}")
    return changes


def check_delete_guard(plan: SyncPlan, max_fraction: float, allow_mass_delete: bool = False) -> None:
    """Refuse a plan deleting more than `max_fraction` of the mirrored files (unless allowed)."""
    deletes = len(plan.of(Action.DELETE))
    if allow_mass_delete or deletes == 0:
        return
    mirrored = plan.stored_count
    if deletes / mirrored > max_fraction:
        raise MassDeleteError(
            f"{plan.survey}: the listing would delete {deletes} of {mirrored} mirrored files "
            f"(> {max_fraction:.0%}); nothing was changed. If upstream really dropped them, "
            "run again with --allow-mass-delete"
        )


# Files of a big plan share task runs (issues 12 and 14): a task run costs Prefect's engine and
# the server about what moving a few MiB costs (108 files of 8 MiB: 3.4 s of server CPU with a
# task run each, 0.8 s packed 8 to a run, `benchmarks/sync_bench.py`), so files under PACK_BYTES
# are packed into units of at most PACK_BYTES and BATCH_FILES files, never fewer units than there
# are workers. Plans with few such files keep a task run per file (what the UI shows for `pr`);
# files of PACK_BYTES and more always do. The run's log and artifact name every file.
PACK_BYTES = 64 * 1024 * 1024
BATCH_FILES = 50
BATCH_ABOVE = 24  # files under PACK_BYTES in a plan beyond which they are packed


def transfer_units(
    items: Iterable[PlanItem],
    workers: int = 1,
    pack_bytes: int = PACK_BYTES,
    batch_files: int = BATCH_FILES,
    batch_above: int = BATCH_ABOVE,
) -> list[tuple[PlanItem, ...]]:
    """The transfers as units of work, in the plan's order (a unit stands where its first file
    did): one file each, except that when more than `batch_above` files are under `pack_bytes`,
    those are packed in order into as few units as hold at most `pack_bytes` and `batch_files`
    each, but at least `workers` of them (a worker with no unit would idle while the others work
    through theirs one file after another)."""
    items = list(items)
    packable = [i for i in items if i.size < pack_bytes]
    if len(packable) <= batch_above:
        return [(i,) for i in items]
    total = sum(i.size for i in packable)
    count = len(packable)
    wanted = max(-(-total // pack_bytes), -(-count // batch_files), min(workers, count))
    byte_cap, file_cap = total / wanted, -(-count // wanted)
    units: list[list[PlanItem]] = [[]]
    held = 0
    for item in packable:
        if units[-1] and (held + item.size > pack_bytes or len(units[-1]) >= batch_files):
            units.append([])
            held = 0
        units[-1].append(item)
        held += item.size
        if len(units[-1]) >= file_cap or 0 < byte_cap <= held:
            units.append([])
            held = 0
    units = [u for u in units if u]
    while len(units) < min(workers, count):  # uneven sizes left a worker without a unit: halve one
        k = max(range(len(units)), key=lambda n: len(units[n]))
        units[k : k + 1] = [units[k][: len(units[k]) // 2], units[k][len(units[k]) // 2 :]]
    first = {u[0].name: tuple(u) for u in units}
    return [first.get(i.name, (i,)) for i in items if i.size >= pack_bytes or i.name in first]
