"""Stamping stored events on the wire, for streams that send many thousands a second.

An event's payload is stored encoded, without its revision and time (they are known only once
it is appended). Decoding each payload, setting two fields and encoding it again costs more
than everything else a watch does; protobuf instead lets fields be appended to an encoded
message (the parser merges them), so a stamped event is the payload plus a few bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime

from canopy_core.convert import epoch_micros
from canopy_core.eventlog import StoredEvent


def varint(value: int) -> bytes:
    """The base-128 encoding of an int64 (a negative one takes ten bytes, as protobuf's)."""
    if 0 <= value < 1 << 28:  # revisions, lengths, tags: no loop
        if value < 1 << 7:
            return bytes((value,))
        if value < 1 << 14:
            return bytes((value & 0x7F | 0x80, value >> 7))
        if value < 1 << 21:
            return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
        return bytes(
            (value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80, value >> 21)
        )
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(value)) + value


def int_field(number: int, value: int) -> bytes:
    """A varint field (wire type 0); zero is the default and is left out."""
    return varint(number << 3) + varint(value) if value else b""


def timestamp_bytes(moment: datetime) -> bytes:
    """The encoding of a `google.protobuf.Timestamp`."""
    seconds, rest = divmod(epoch_micros(moment), 1_000_000)
    return int_field(1, seconds) + int_field(2, rest * 1000)


@functools.lru_cache(maxsize=64)
def _time_field(number: int, moment: datetime) -> bytes:
    return _field(number, timestamp_bytes(moment))


_TAGS = {number: varint(number << 3) for number in range(1, 16)}  # varint fields 1-15


def stamped(event: StoredEvent, *, revision_field: int = 1, time_field: int = 2) -> bytes:
    """The event's payload with its revision and time set."""
    # The events of one transaction share their time: it is encoded once.
    return (
        event.payload
        + _TAGS[revision_field]
        + varint(event.revision)
        + _time_field(time_field, event.created_at)
    )


def repeated(number: int, messages: Iterable[bytes]) -> bytes:
    """Encoded messages as the elements of a repeated message field."""
    tag = varint(number << 3 | 2)
    return b"".join(tag + varint(len(m)) + m for m in messages)
