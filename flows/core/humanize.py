"""Numbers for people: sizes in binary units, counts with thousands separators.

Pure; the one place run pages, artifacts and logs format a size, so every page says `1.5 MiB`
the same way (machine-readable outputs keep exact byte counts).
"""

from __future__ import annotations

UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int | float) -> str:
    """`0 B`, `512 B`, `1.5 KiB`, `12.3 MiB`, `3.1 GiB`: three significant digits at most."""
    value = float(n)
    if abs(value) < 1024:
        return f"{int(value)} B"
    for unit in UNITS:
        value /= 1024
        shown = f"{value:.1f}" if abs(value) < 99.95 else f"{value:.0f}"
        if abs(float(shown)) < 1024 or unit == UNITS[-1]:  # 1023.9 KiB shows as 1.0 MiB
            return f"{shown} {unit}"
    raise AssertionError("unreachable")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 file`, `1,204 files`."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"
