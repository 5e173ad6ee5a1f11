"""Type-prefixed, URL-safe, time-sortable identifiers (`i_01jd…`, `f_…`, `c_…`)."""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """A new id: prefix, underscore, 10 characters of millisecond time, 16 of randomness."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    randomness = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(randomness, 16)}"


def new_etag() -> str:
    """An opaque entity tag for a new version of a stored resource."""
    return _encode(int.from_bytes(os.urandom(10), "big"), 16)


def id_pattern(prefix: str) -> re.Pattern[str]:
    """The shape of ids with this prefix, whether generated here or given by the platform."""
    return re.compile(rf"^{prefix}_[a-z0-9]{{1,60}}\Z")
