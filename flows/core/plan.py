"""The mirror plan: upstream listing × stored objects → add / update / delete / keep (pure).

A file is kept — no GET, no PUT — when its listed size and listed last-modified equal what the
stored object's metadata recorded at the time it was mirrored, the stored size agrees, and the
stored object's integrity metadata can be trusted (`flows.core.objects.trusted_sha256`). An object whose
sha256 is missing or contradicts it (e.g. left by a crash or by two syncs racing) is transferred
again rather than kept forever.
Deletions are guarded: a plan removing more than the max fraction of the mirrored files is
refused unless explicitly allowed, since a truncated listing must not empty the mirror.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum

from flows.core.errors import MassDeleteError
from flows.core.listing import ListingEntry
from flows.core.objects import META_UPSTREAM_LAST_MODIFIED, META_UPSTREAM_SIZE, StoredObject, trusted_sha256


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
    sha256: str | None  # None when missing or not to be trusted: the file is then transferred again

    @classmethod
    def from_object(cls, name: str, obj: StoredObject) -> StoredFile:
        raw_size = obj.metadata.get(META_UPSTREAM_SIZE)
        return cls(
            name=name,
            size=obj.size,
            upstream_size=int(raw_size) if raw_size and raw_size.isascii() and raw_size.isdigit() else None,
            upstream_last_modified=obj.metadata.get(META_UPSTREAM_LAST_MODIFIED),
            sha256=trusted_sha256(obj),
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
    if have.sha256 is None:
        changes.append("stored object has no trustworthy sha256 metadata")
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


# Small files of a big plan move in batches, one task run each (issue 14): a task run costs
# Prefect's engine and the server about as much as moving a small file itself, so 1,000 small
# files cost more in task runs than in bytes. Plans with few small files keep a task run per file
# (what the UI shows for `pr`); big files always do. The run's log and artifact name every file.
SMALL_FILE_BYTES = 1024 * 1024
BATCH_FILES = 50
BATCH_ABOVE = 100  # small transfers in a plan beyond which they are batched


def transfer_units(
    items: Iterable[PlanItem],
    small_bytes: int = SMALL_FILE_BYTES,
    batch_files: int = BATCH_FILES,
    batch_above: int = BATCH_ABOVE,
) -> list[tuple[PlanItem, ...]]:
    """The transfers as units of work, in the plan's order (a batch stands where its first file
    did): one file each, except that when more than `batch_above` files are under `small_bytes`,
    those go `batch_files` to a unit."""
    items = list(items)
    small = [i for i in items if i.size < small_bytes]
    if len(small) <= batch_above:
        return [(i,) for i in items]
    batches = [tuple(small[k : k + batch_files]) for k in range(0, len(small), batch_files)]
    first = {batch[0].name: batch for batch in batches}
    return [first.get(i.name, (i,)) for i in items if i.size >= small_bytes or i.name in first]
