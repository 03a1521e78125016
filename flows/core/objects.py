"""What the store records about an object, and when that record can be believed (pure).

Shared by the store (which writes the metadata) and the sync plan (which decides on it), so the
metadata names live here, below both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

META_SHA256 = "sha256"
META_SHA256_SIZE = "sha256-size"
# On an S3 multipart object: the byte count of the full-object CRC-32 S3 verified before the object
# appeared (S3 keeps that CRC-32 itself; a sha256 is unknown when the metadata must be given).
META_CRC32_SIZE = "crc32-size"
META_SOURCE_URL = "source-url"
META_UPSTREAM_LAST_MODIFIED = "upstream-last-modified"
META_UPSTREAM_SIZE = "upstream-size"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: datetime | None = None


def trusted_sha256(obj: StoredObject) -> str | None:
    """The object's sha256 when its metadata can be believed without reading the bytes, else None.

    Believed means: a well-formed sha256 recorded with the byte count it covers, and that count is
    the object's size. Objects published before `sha256-size` existed (when a crash or a concurrent
    sync could leave a sha256 describing other bytes) are not believed, so they get re-transferred.
    """
    sha = obj.metadata.get(META_SHA256, "")
    if not _SHA256_HEX.fullmatch(sha):
        return None
    return sha if obj.metadata.get(META_SHA256_SIZE) == str(obj.size) else None


def trusted_integrity(obj: StoredObject) -> str | None:
    """What vouches for the object's bytes, when its metadata can be believed; else None.

    Either our sha256 (`trusted_sha256`), or, on an S3 multipart object, the full-object CRC-32
    S3 verified at completion: its metadata was given when the upload began and appeared with
    the bytes, so `crc32-size` equal to the object's size says they belong together.
    """
    sha = trusted_sha256(obj)
    if sha is not None:
        return f"sha256 {sha}"
    if obj.metadata.get(META_CRC32_SIZE) == str(obj.size):
        return f"S3 full-object CRC-32 of {obj.size} bytes"
    return None
