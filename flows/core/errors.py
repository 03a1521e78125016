"""Every expected failure of the pipeline, in one hierarchy (read this module top to bottom).

An expected failure is one a user can act on: its message says what and where. The CLI prints it as
one line (`quest <command>: error: ...`, exit 1), the Lambda handler and Prefect show it as a clean
Failed state; anything that is not a `QuestError` is a bug and keeps its traceback.

    QuestError
    ├── ConfigError                  a setting is missing or invalid (also a ValueError)
    ├── UpstreamError                the upstream sites (BLS, DataUSA)
    │   ├── HttpStatusError          a non-success status (retried: 5xx, 408, 429)
    │   ├── IncompleteBody           fewer or more bytes than announced (retried)
    │   ├── DeadlineExceeded         a request outlived its overall deadline (retried)
    │   ├── RedirectRefused          a redirect to another host or from https to http
    │   ├── UpstreamUnavailable      unreachable even after the retries
    │   ├── BodyTooLarge             a body read whole is past its cap (decoded bytes)
    │   ├── UndecodableBody          a Content-Encoding we do not read, or bytes that are not it
    │   ├── PolitenessLimitError     Prefect's BLS request limits could not be taken
    │   └── ListingError             the page is not a complete directory listing: nothing deleted
    │       └── IncompleteListing
    ├── DataError                    an input that cannot be read or computed on
    │   ├── PopulationFormatError    not a DataUSA population response, or impossible figures
    │   │   └── PopulationBodyTooLarge
    │   ├── PopulationDataError      the population cannot give the requested statistics
    │   ├── BlsFormatError           not a tab-separated BLS time-series file
    │   └── EventFormatError         a Lambda event that is not an SQS batch
    ├── StoreError                   a store operation failed (the message names the object)
    │   ├── GarbledState             a stored state object none of ours could have written
    │   ├── SizeMismatch             the stream's byte count was wrong: nothing published (retried)
    │   ├── LeaseHeld                another sync holds this survey's lease
    │   └── LeaseLost                the lease expired or was taken over while held
    ├── MissingInput                 an object the reports need is not in the store
    ├── MirrorError                  the mirror refused or failed a step: nothing deleted
    │   ├── MassDeleteError          the plan would delete too large a share of the mirror
    │   ├── TransferFailed           one or more files could not be mirrored
    │   └── TransfersCancelled       the run is stopping: in-flight transfers were aborted
    └── RuntimeFailure               the Lambda side
        ├── UnknownEvent             an event matching none of the handler's entry paths
        ├── FlowRunEntryError        a flow run cannot be run in the function
        ├── LambdaTimeLimitReached   the entry without a Prefect API stopped before Lambda's deadline
        └── LambdaInvokeError        the worker could not invoke the function
"""

from __future__ import annotations


class QuestError(Exception):
    """A failure the user can act on; the message says what and where."""


class ConfigError(QuestError, ValueError):
    """A setting is missing or invalid; the message names the setting and says how to fix it.

    Also a ValueError so that a pydantic validator raising it reports it as a value problem.
    """


# --------------------------------------------------------------------------- upstream sites


class UpstreamError(QuestError):
    """Something about the upstream sites (BLS, DataUSA) or the way they answered."""


class PolitenessLimitError(UpstreamError):
    """Prefect's politeness limits for BLS could not be taken (deleted meanwhile, API unreachable)."""


class HttpStatusError(UpstreamError):
    """The server answered with a non-success status."""

    def __init__(self, url: str, status: int, retry_after: float | None = None, detail: str = ""):
        self.url, self.status, self.retry_after = url, status, retry_after
        extra = f" ({detail})" if detail else ""
        super().__init__(f"GET {url} answered HTTP {status}{extra}")


class IncompleteBody(UpstreamError):
    """The body's length disagrees with Content-Length or the listed size; worth retrying."""


class DeadlineExceeded(UpstreamError):
    """A request outlived its overall deadline (a peer trickling bytes); worth retrying."""


class RedirectRefused(UpstreamError):
    """The server redirected to another host (or from https to http); its bytes are not the source's."""


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached even after the retries."""


class BodyTooLarge(UpstreamError):
    """A body read whole (a listing, the population) is larger than its cap once decoded."""


class UndecodableBody(UpstreamError):
    """A Content-Encoding we cannot decode in bounded memory, or bytes that are not that coding."""


class ListingError(UpstreamError):
    """The survey directory could not be read as a listing; nothing may be deleted."""


class IncompleteListing(ListingError):
    """The page stops before the listing's closing markup: rows may be missing, so nothing is deleted."""


# --------------------------------------------------------------------------- input data


class DataError(QuestError):
    """An input that cannot be read, or cannot give what was asked of it."""


class PopulationFormatError(DataError):
    """The body is not a DataUSA population response, or holds figures no population can have."""


class PopulationBodyTooLarge(PopulationFormatError):
    """The body is far larger than any population response (the real one is about 1.3 KB)."""


class PopulationDataError(DataError):
    """The population data cannot give the requested statistics."""


class BlsFormatError(DataError):
    """The BLS file is not a tab-separated time-series data file."""


class EventFormatError(DataError):
    """The Lambda event is not an SQS batch at all (its messages cannot even be told apart)."""


# --------------------------------------------------------------------------- the store


class StoreError(QuestError):
    """A store operation failed; the message names the object."""


class GarbledState(StoreError):
    """A stored state object that is not one we could have written (the message says why)."""


class SizeMismatch(StoreError):
    """The stream ended with a different byte count than expected; nothing was published."""


class LeaseHeld(StoreError):
    """Another writer holds the lease on this prefix (the message says who and until when)."""


class LeaseLost(StoreError):
    """The lease expired or was taken over while held: the work done under it may have interleaved."""


class MissingInput(QuestError):
    """An input object the reports need is not in the store."""


# --------------------------------------------------------------------------- the mirror


class MirrorError(QuestError):
    """The mirror refused a plan or could not carry it out; nothing was deleted."""


class MassDeleteError(MirrorError):
    """The plan would delete too large a share of the mirror."""


class TransferFailed(MirrorError):
    """One or more files could not be mirrored; nothing was deleted."""


class TransfersCancelled(MirrorError):
    """The run is stopping (a signal, a failed sibling, a cancel): in-flight transfers were aborted."""


# --------------------------------------------------------------------------- Lambda


class RuntimeFailure(QuestError):
    """The Lambda side: the function's entry paths and the worker that invokes it."""


class UnknownEvent(RuntimeFailure, ValueError):
    """The event matches none of the entry paths."""


class FlowRunEntryError(RuntimeFailure):
    """The event or the runtime is not usable for running a flow run; the message says why."""


class LambdaTimeLimitReached(RuntimeFailure):
    """An entry without a Prefect API stopped before Lambda's deadline (or had too little time to
    start); the message names the limit. Nothing half-written was published."""


class LambdaInvokeError(RuntimeFailure):
    """The function could not be invoked or reported a function error; the message says why."""


# --------------------------------------------------------------------------- messages


def one_line(text: str) -> str:
    """`text` on one printable line: line breaks become spaces, other unprintables are escaped.

    Messages quote values users and servers supplied; the CLI promises one line per failure.
    """
    return "".join(c if c.isprintable() else " " if c.isspace() else ascii(c)[1:-1] for c in text).strip()
