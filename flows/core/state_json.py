"""The one reader of the JSON state objects we keep in the store (stat caches, leases, sidecars): pure.

The store is not ours alone: anyone with write access (or a bug, a half-copied bucket) can leave
any bytes where a state object belongs. They are read as data: invalid UTF-8, nesting past any
format of ours (the parser's recursion), NaN and Infinity (not JSON, never written by us),
duplicate keys (which value counts is a guess), a body over its cap: each is `GarbledState`, one
line saying why, never a traceback. The caller decides what garbled means (an empty cache, an
expired lease) and logs it.
"""

from __future__ import annotations

import json
from typing import Any

from flows.core.errors import GarbledState

# A lease record is a few hundred bytes; a stat cache about 300 bytes an object (BLS's biggest
# survey folders hold a few hundred files). Past these, the object is not one of ours.
MAX_LEASE_BYTES = 64 * 1024
MAX_STAT_CACHE_BYTES = 16 * 1024 * 1024
MAX_SIDECAR_BYTES = 64 * 1024
# Our formats nest at most 4 deep; json's C parser stops deeper nesting with a RecursionError (near
# 1000 levels, whatever the body's size), read here as garbled.


def _no_constant(name: str) -> Any:
    raise GarbledState(f"holds {name}, which is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise GarbledState("repeats a key")
    return doc


def read_object(data: bytes | str, max_bytes: int, what: str = "state object") -> dict[str, Any]:
    """The JSON object in `data`, or `GarbledState` saying why it is none of ours."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise GarbledState(f"{what} is {size:,} bytes, over the {max_bytes:,} a valid one can be")
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        doc = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique)
    except GarbledState as exc:
        raise GarbledState(f"{what} {exc}") from None
    except UnicodeDecodeError:
        raise GarbledState(f"{what} is not UTF-8") from None
    except RecursionError:
        raise GarbledState(f"{what} nests deeper than any of ours (the parser's recursion limit)") from None
    except ValueError as exc:  # JSONDecodeError, an integer past Python's digit limit
        raise GarbledState(f"{what} is not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise GarbledState(f"{what} is a JSON {type(doc).__name__}, not an object")
    return doc
