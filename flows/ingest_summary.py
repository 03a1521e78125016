"""What a day's ingest did, for the run's page: its final message and its summary artifact.

`IngestSummary` is the in-process ingest (every survey mirrored as a subflow), `IngestFanOut` the
work pool's (a mirror run started per changed survey). Both render one Markdown summary (the
ingest run's artifact): per survey what changed and how many bytes, and the population snapshot
with its years; sizes in binary units. Pure: no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel

from flows.core.humanize import counted, human_bytes
from flows.core.markdown import md_code, md_text
from flows.core.names import REPORT_SURVEY
from flows.discovery import SurveySelection
from flows.mirror import MirrorSummary
from flows.snapshot import PopulationSummary


class IngestSummary(BaseModel):
    """The in-process ingest: every survey's mirror, then the snapshot."""

    surveys: list[MirrorSummary]
    population: PopulationSummary
    selection: SurveySelection | None = None

    def message(self) -> str:
        """The final log line: totals, then the snapshot."""
        changed = [
            m for m in self.surveys if m.counts()["added"] + m.counts()["updated"] + m.counts()["deleted"]
        ]
        moved = sum(m.bytes_transferred for m in self.surveys)
        return (
            f"{counted(len(self.surveys), 'survey')}: {len(changed)} changed, "
            f"{human_bytes(moved)} transferred; population snapshot {_snapshot_text(self.population)}"
        )

    def markdown(self) -> str:
        rows = [_mirror_row(m) for m in self.surveys]
        return _page("Ingest", self.selection, rows, self.population)


class IngestFanOut(BaseModel):
    """What a fanned-out ingest did: surveys unchanged, mirror runs started, the snapshot or who writes it."""

    selection: SurveySelection
    unchanged: list[MirrorSummary]
    started: dict[str, str]  # survey -> flow run id of its mirror-survey run
    in_progress: dict[str, str] = {}  # survey -> its mirror run still going (not started again)
    failed: dict[str, str] = {}  # survey -> why its check failed (nothing started for it)
    population: PopulationSummary | None = None
    population_by: str | None = None  # the run that writes the snapshot when pr changed
    population_note: str | None = None  # why no run of this chain writes it
    checked: int | None = None  # surveys checked, when the time ran out before the last one
    continues_in: str | None = None  # the follow-up ingest run checking the rest

    def message(self) -> str:
        started = ", ".join(f"{s} ({rid})" for s, rid in self.started.items()) or "none"
        if self.population is not None:
            who = "written"
        elif self.population_note is not None:
            who = self.population_note
        elif self.population_by is not None:
            who = f"written by {REPORT_SURVEY}'s mirror run {self.population_by}"
        else:
            who = "written by the first ingest run of the day"
        total = len(self.selection.surveys)
        head = (
            f"partial: checked {self.checked} of {total} surveys; continues in run {self.continues_in}; "
            if self.continues_in
            else ""
        )
        failed = "".join(f"; {s} FAILED: {why}" for s, why in self.failed.items())
        head = f"{len(self.failed)} of {total} surveys could not be checked{failed}; " if failed else head
        if failed and self.continues_in:
            head += f"the rest continues in run {self.continues_in}; "
        busy = ", ".join(f"{s} ({rid})" for s, rid in self.in_progress.items())
        checked = total if self.checked is None else self.checked
        return (
            f"{head}{counted(checked, 'survey')}: {len(self.unchanged)} unchanged; mirror runs started: "
            f"{started}{f'; still mirroring from an earlier run: {busy}' if busy else ''}; "
            f"population snapshot {who}"
        )

    def markdown(self) -> str:
        rows: list[str] = []
        for survey in self.selection.surveys:
            if survey in self.started:
                rows.append(
                    f"| {md_code(survey)} | changed: mirror run started | {md_code(self.started[survey])} | |"
                )
            elif survey in self.in_progress:
                rows.append(
                    f"| {md_code(survey)} | still mirroring from an earlier run "
                    f"| {md_code(self.in_progress[survey])} | |"
                )
            elif survey in self.failed:
                rows.append(f"| {md_code(survey)} | **check failed**: {md_text(self.failed[survey])} | | |")
        rows += [_mirror_row(m) for m in self.unchanged]
        done = (
            set(self.started) | set(self.in_progress) | set(self.failed) | {m.survey for m in self.unchanged}
        )
        rows += [
            f"| {md_code(s)} | not checked yet: left for {md_text(self.continues_in or '')} | | |"
            for s in self.selection.surveys
            if s not in done and self.continues_in
        ]
        return _page("Ingest (fan-out)", self.selection, rows, self.population)


def _snapshot_text(population: PopulationSummary | None) -> str:
    if population is None:
        return "not written by this run"
    years = f"{population.years[0]}–{population.years[-1]}" if population.years else "no years"
    return (
        f"{md_code(population.key)} ({len(population.years)} years, {years}, {human_bytes(population.bytes)})"
    )


def _mirror_row(m: MirrorSummary) -> str:
    c = m.counts()
    changed = ", ".join(f"{c[k]:,} {k}" for k in ("added", "updated", "deleted") if c[k]) or "no change"
    if m.not_done:
        changed += f"; {len(m.not_done):,} left for {md_text(m.continues_in or '')}"
    moved = human_bytes(m.bytes_transferred)
    return f"| {md_code(m.survey)} | {changed} ({c['kept']:,} kept) | {md_code(m.store_url)} | {moved} |"


def _page(
    title: str,
    selection: SurveySelection | None,
    rows: list[str],
    population: PopulationSummary | None,
) -> str:
    lines = [f"# {title}", ""]  # the message is the artifact's description, shown above
    if selection is not None:
        lines += [f"Surveys: {md_text(selection.describe())}", ""]
    lines += ["| survey | what happened | where | transferred |", "|---|---|---|---:|", *rows, ""]
    lines += ["## Population snapshot", "", _snapshot_text(population)]
    if population is not None:
        lines += ["", f"Stored at {md_code(population.location)} from {md_code(population.source_url)}"]
    return "\n".join(lines) + "\n"
