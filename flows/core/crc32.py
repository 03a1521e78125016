"""CRC-32 of a whole object from the CRC-32s of its parts (pure).

S3 verifies a multipart upload's full-object CRC-32 at completion. The parts' CRC-32s are computed
anyway (each UploadPart carries its own), in the upload threads; combining them gives the
object's without a second pass over every byte. The maths: CRC-32 is linear over GF(2), so
crc(A ‖ B) = crc(A)·x^(8·len(B)) mod P  ⊕  crc(B), with the polynomial P and the values in
zlib's reflected bit order (bit 31 is x⁰).
"""

from __future__ import annotations

import base64

_POLY = 0xEDB88320  # P = x^32 + x^26 + ... + 1, reflected, without its x^32 term
_ONE = 1 << 31  # the polynomial 1 in reflected order


def _multiply(a: int, b: int) -> int:
    """a·b mod P, both reflected."""
    product = 0
    bit = _ONE
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1  # b·x mod P
    return product


def _x_to_the_bits_of(length: int) -> int:
    """x^(8·length) mod P, by squaring."""
    result, power, exponent = _ONE, _ONE >> 1, 8 * length  # power starts at x¹
    while exponent:
        if exponent & 1:
            result = _multiply(result, power)
        power = _multiply(power, power)
        exponent >>= 1
    return result


def combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """The CRC-32 of A ‖ B from crc(A), crc(B) and B's length in bytes (zlib's crc32 values)."""
    if length_b < 0:
        raise ValueError(f"a length cannot be negative: {length_b}")
    return _multiply(_x_to_the_bits_of(length_b), crc_a) ^ crc_b


def as_base64(crc: int) -> str:
    """A CRC-32 as S3 writes it (`x-amz-checksum-crc32`): its 4 big-endian bytes, base64."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()
