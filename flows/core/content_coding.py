"""Decoding an HTTP body's Content-Encoding in bounded memory.

httpx decodes each raw chunk whole: one 64 KiB read of a gzip bomb becomes 64 MiB at once, and a
stacked `gzip, gzip` body multiplies that again. Here every decompress call is given `max_length`,
so no step ever holds more than `step` bytes of output per coding, whatever the ratio; a caller
counting the pieces can stop a body at its cap before it is ever in memory.

Only the codings zlib decodes are read (gzip, x-gzip, deflate; identity is none). Anything else
(br, zstd, compress, an unknown name) is refused: we ask for `identity`, so a server sending
one of them is not answering our request, and we cannot bound what its decoder would allocate.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator, Iterable, Iterator

from flows.core.errors import IncompleteBody, UndecodableBody

STEP_BYTES = 64 * 1024
GZIP = "gzip"
DEFLATE = "deflate"
_ALIASES = {"gzip": GZIP, "x-gzip": GZIP, "deflate": DEFLATE}
_NONE = frozenset({"", "identity"})
SHOWN_CHARS = 40


def content_codings(values: Iterable[str], where: str) -> tuple[str, ...]:
    """The codings of Content-Encoding header values (comma lists, in the order applied), identity
    dropped; UndecodableBody for one we cannot decode in bounded memory."""
    codings: list[str] = []
    for value in values:
        for item in value.split(","):
            name = item.strip().lower()
            if name in _NONE:
                continue
            if name not in _ALIASES:
                shown = name[:SHOWN_CHARS].encode("ascii", "backslashreplace").decode()
                raise UndecodableBody(
                    f"{where}: Content-Encoding {shown!r} is not one we decode (we ask for identity; "
                    "gzip and deflate are read); refused"
                )
            codings.append(_ALIASES[name])
    return tuple(codings)


def decode_body(
    chunks: Iterable[bytes], codings: tuple[str, ...], where: str, step: int = STEP_BYTES
) -> Iterator[bytes]:
    """The decoded body, in pieces of at most `step` bytes; the codings are undone last first.

    IncompleteBody for a compressed stream that stops before its end (retried as a cut body),
    UndecodableBody for bytes that are not the coding they claim.
    """
    decoded: Iterable[bytes] = chunks
    for coding in reversed(codings):
        decoded = _inflate(decoded, coding, where, step)
    yield from decoded


def _decompressor(coding: str, head: bytes) -> zlib._Decompress:
    if coding == GZIP:
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    # `deflate` is meant to be zlib-wrapped, but some servers send raw deflate (httpx reads both):
    # a zlib header is CM=8 with (CMF*256 + FLG) divisible by 31. A raw stream never starts so:
    # low bits 1000 would be a non-final stored block, whose padding bit is 0.
    wrapped = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] * 256 + head[1]) % 31 == 0
    return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)


def _inflate(chunks: Iterable[bytes], coding: str, where: str, step: int) -> Iterator[bytes]:
    """One coding undone, at most `step` bytes out per call. Gzip members may follow each other."""
    decompressor: zlib._Decompress | None = None
    started = False
    pending = b""  # the first bytes of a deflate body, until its header can be told apart
    for chunk in chunks:
        data = pending + chunk
        pending = b""
        while data:
            if decompressor is None:
                if coding == DEFLATE and not started and len(data) < 2:
                    pending = data
                    break
                decompressor, started = _decompressor(coding, data), True
            data = yield from _drain(decompressor, data, where, coding, step)
            if decompressor.eof:
                if data and coding != GZIP:
                    raise UndecodableBody(f"{where}: bytes after the end of the {coding} body; refused")
                decompressor = None  # another gzip member follows, or the body ends here
    if pending or (decompressor is not None and not decompressor.eof):
        raise IncompleteBody(f"{where}: the {coding} body stops before its end")


def _drain(
    decompressor: zlib._Decompress, data: bytes, where: str, coding: str, step: int
) -> Generator[bytes, None, bytes]:
    """Feed `data`, yielding at most `step` bytes at a time; returns the bytes past the stream's end."""
    feed: Callable[[bytes, int], bytes] = decompressor.decompress
    while True:
        try:
            out = feed(data, step)
        except zlib.error as exc:
            raise UndecodableBody(f"{where}: the body is not valid {coding} ({exc}); refused") from None
        data = decompressor.unconsumed_tail
        if out:
            yield out
        if decompressor.eof:
            return decompressor.unused_data + data
        if not data and len(out) < step:  # input used up and no output left waiting
            return b""
