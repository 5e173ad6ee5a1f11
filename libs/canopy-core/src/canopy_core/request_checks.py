"""One rule at the edge for request bytes and text, before any handler runs.

- Bytes that are not a valid encoding of the request message (a truncated field, invalid UTF-8
  in a string, a field sent with the wrong wire type) are `INVALID_ARGUMENT`
  (`MALFORMED_REQUEST`) naming the field whose encoding is wrong, found by walking the wire
  format against the message's descriptor. When no field can be named (a broken tag at the
  top level), the violation names `request`.
- No string anywhere in a request (nested messages, repeated and map fields, oneofs, wrappers)
  may hold U+0000, the one character PostgreSQL text cannot hold (valid UTF-8, which the parser
  already insists on, holds nothing else it cannot store): `INVALID_ARGUMENT` (`NUL_IN_TEXT`)
  with each such field's path (`snapshot.accounts[3].name`, `labels["env"]`).

A gRPC deserializer cannot fail without the call ending `UNKNOWN`, so `checked_deserializer`
returns a `RefusedRequest` instead, which the interceptor raises through the normal error path.
Pure functions, no grpc: tested exhaustively on their own.

What it costs: the parser (upb) reports wrong wire types as unknown fields rather than errors,
so after parsing, unknown fields are dropped and the message's size compared with the bytes
received (one C call); only a difference (unknown fields, or an unusual but valid encoding)
walks the bytes in Python. Likewise a request whose bytes hold no 0x00 byte cannot hold a NUL
in a string, so the walk for NULs runs only when they do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from canopy_core.errors import FieldViolation, InvalidArgument

WHOLE_REQUEST = "request"  # the field named when no single field's encoding can be blamed
MAX_VIOLATIONS = 10  # NUL violations reported at most (the first ones, in field order)
MAX_DEPTH = 100  # as the parser's own nesting limit
MALFORMED = "MALFORMED_REQUEST"
NUL_IN_TEXT = "NUL_IN_TEXT"
NUL_RULE = "must not contain a NUL character (U+0000), which text cannot hold"

_MAP_KEY_CHARS = 64  # a longer map key is shortened in a path
_WRAPPERS = frozenset({"google.protobuf.StringValue"})  # a wrapper's path is its field's

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_WIRE_NAMES = {
    _VARINT: "a varint",
    _I64: "a 64-bit value",
    _LEN: "a length-delimited value",
    _SGROUP: "a group",
    _EGROUP: "a group end",
    _I32: "a 32-bit value",
}
_FD = FieldDescriptor
_WIRE_OF_TYPE = {
    _FD.TYPE_DOUBLE: _I64,
    _FD.TYPE_FLOAT: _I32,
    _FD.TYPE_INT64: _VARINT,
    _FD.TYPE_UINT64: _VARINT,
    _FD.TYPE_INT32: _VARINT,
    _FD.TYPE_FIXED64: _I64,
    _FD.TYPE_FIXED32: _I32,
    _FD.TYPE_BOOL: _VARINT,
    _FD.TYPE_STRING: _LEN,
    _FD.TYPE_GROUP: _SGROUP,
    _FD.TYPE_MESSAGE: _LEN,
    _FD.TYPE_BYTES: _LEN,
    _FD.TYPE_UINT32: _VARINT,
    _FD.TYPE_ENUM: _VARINT,
    _FD.TYPE_SFIXED32: _I32,
    _FD.TYPE_SFIXED64: _I64,
    _FD.TYPE_SINT32: _VARINT,
    _FD.TYPE_SINT64: _VARINT,
}
_TYPE_NAMES = {
    _FD.TYPE_DOUBLE: "double",
    _FD.TYPE_FLOAT: "float",
    _FD.TYPE_INT64: "int64",
    _FD.TYPE_UINT64: "uint64",
    _FD.TYPE_INT32: "int32",
    _FD.TYPE_FIXED64: "fixed64",
    _FD.TYPE_FIXED32: "fixed32",
    _FD.TYPE_BOOL: "bool",
    _FD.TYPE_STRING: "string",
    _FD.TYPE_GROUP: "group",
    _FD.TYPE_MESSAGE: "message",
    _FD.TYPE_BYTES: "bytes",
    _FD.TYPE_UINT32: "uint32",
    _FD.TYPE_ENUM: "enum",
    _FD.TYPE_SFIXED32: "sfixed32",
    _FD.TYPE_SFIXED64: "sfixed64",
    _FD.TYPE_SINT32: "sint32",
    _FD.TYPE_SINT64: "sint64",
}
_MAX_FIELD_NUMBER = (1 << 29) - 1


@dataclass(frozen=True)
class RefusedRequest:
    """What a checked deserializer returns for a request it refuses: the error to answer."""

    error: InvalidArgument


def checked_deserializer(
    deserialize: Callable[[bytes], Any], descriptor: Descriptor
) -> Callable[[bytes], Any]:
    """`deserialize` (a generated `FromString`) with the edge's rule: a `RefusedRequest` for
    bytes that are not a valid `descriptor` message, or that hold a NUL in any string."""

    def checked(data: bytes) -> Any:
        try:
            message = deserialize(data)
        except Exception:  # the parser's DecodeError: whatever it is, the bytes are the cause
            named = encoding_violation(descriptor, data)
            unnamed = FieldViolation(WHOLE_REQUEST, f"is not a valid {descriptor.full_name}")
            return RefusedRequest(InvalidArgument([named or unnamed], reason=MALFORMED))
        message.DiscardUnknownFields()
        if message.ByteSize() != len(data):
            # Unknown fields (a wrong wire type among them) or an unusual encoding.
            violation = encoding_violation(descriptor, data)
            if violation is not None:
                return RefusedRequest(InvalidArgument([violation], reason=MALFORMED))
        if b"\x00" in data:
            found = nul_violations(message)
            if found:
                return RefusedRequest(InvalidArgument(found, reason=NUL_IN_TEXT))
        return message

    return checked


# -- NUL in text: a walk of the parsed message -----------------------------------------------


# How the walk reaches a field that can hold text.
_STRING, _STRINGS, _MESSAGE, _MESSAGES, _WRAPPER, _WRAPPERS_LIST, _MAP = range(7)
# What a map's values are.
_TEXT_VALUES, _WRAPPER_VALUES, _MESSAGE_VALUES, _OTHER_VALUES = range(4)

# Per message type, in field order: (name, how to reach it, what a map's values are).
_plans: dict[str, tuple[tuple[str, int, int], ...]] = {}


def _holds_text(descriptor: Descriptor, visiting: set[str]) -> bool:
    """Whether a message of this type can hold a string at any depth."""
    if descriptor.full_name in visiting:
        return False  # a cycle adds nothing the rest of the type cannot hold
    visiting.add(descriptor.full_name)
    for field in descriptor.fields:
        if field.type == _FD.TYPE_STRING:
            return True
        if field.message_type is not None and _holds_text(field.message_type, visiting):
            return True
    return False


def _plan(descriptor: Descriptor) -> tuple[tuple[str, int, int], ...]:
    """The fields of one message type that can hold text, in field order."""
    plan = _plans.get(descriptor.full_name)
    if plan is not None:
        return plan
    steps: list[tuple[str, int, int]] = []
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        repeated = _is_repeated(field)
        kind = field.message_type
        if field.type == _FD.TYPE_STRING:
            steps.append((field.name, _STRINGS if repeated else _STRING, _OTHER_VALUES))
        elif kind is None or not _holds_text(kind, set()):
            continue
        elif kind.GetOptions().map_entry:
            steps.append((field.name, _MAP, _value_kind(kind.fields_by_name["value"])))
        elif kind.full_name in _WRAPPERS:
            steps.append((field.name, _WRAPPERS_LIST if repeated else _WRAPPER, _OTHER_VALUES))
        else:
            steps.append((field.name, _MESSAGES if repeated else _MESSAGE, _OTHER_VALUES))
    plan = _plans[descriptor.full_name] = tuple(steps)
    return plan


def _value_kind(field: FieldDescriptor) -> int:
    """What a map's values are, for the walk."""
    if field.type == _FD.TYPE_STRING:
        return _TEXT_VALUES
    kind = field.message_type
    if kind is None or not _holds_text(kind, set()):
        return _OTHER_VALUES
    return _WRAPPER_VALUES if kind.full_name in _WRAPPERS else _MESSAGE_VALUES


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def map_key_path(key: object) -> str:
    """How a map key appears in a path: `["env"]` for strings (JSON-quoted, long ones cut),
    `[7]` for integers, `[true]` for booleans."""
    if isinstance(key, bool):
        return "[true]" if key else "[false]"
    if isinstance(key, str):
        shown = key if len(key) <= _MAP_KEY_CHARS else key[:_MAP_KEY_CHARS] + "…"
        return f"[{json.dumps(shown)}]"
    return f"[{key}]"


def nul_violations(message: Message, limit: int = MAX_VIOLATIONS) -> list[FieldViolation]:
    """Every string field (at any depth) holding U+0000, by path in field order, the first
    `limit` of them."""
    found: list[FieldViolation] = []
    _find_nul(message, "", found, limit)
    return found


def _find_nul(message: Any, prefix: str, found: list[FieldViolation], limit: int) -> None:
    for name, how, values in _plan(message.DESCRIPTOR):
        if how == _STRING:
            if "\x00" in getattr(message, name):
                _add(found, limit, prefix + name, NUL_RULE)
        elif how == _STRINGS:
            for i, text in enumerate(getattr(message, name)):
                if "\x00" in text:
                    _add(found, limit, f"{prefix}{name}[{i}]", NUL_RULE)
        elif how == _MESSAGE:
            if message.HasField(name):
                _find_nul(getattr(message, name), f"{prefix}{name}.", found, limit)
        elif how == _MESSAGES:
            for i, item in enumerate(getattr(message, name)):
                _find_nul(item, f"{prefix}{name}[{i}].", found, limit)
        elif how == _WRAPPER:
            if message.HasField(name) and "\x00" in getattr(message, name).value:
                _add(found, limit, prefix + name, NUL_RULE)
        elif how == _WRAPPERS_LIST:
            for i, item in enumerate(getattr(message, name)):
                if "\x00" in item.value:
                    _add(found, limit, f"{prefix}{name}[{i}]", NUL_RULE)
        else:
            _find_nul_in_map(getattr(message, name), prefix + name, values, found, limit)


def _find_nul_in_map(
    entries: Any, path: str, values: int, found: list[FieldViolation], limit: int
) -> None:
    for key, value in entries.items():
        if isinstance(key, str) and "\x00" in key:
            _add(found, limit, path, "has a key holding a NUL character (U+0000)")
            continue
        entry = path + map_key_path(key)
        if values == _TEXT_VALUES:
            if "\x00" in value:
                _add(found, limit, entry, NUL_RULE)
        elif values == _WRAPPER_VALUES:
            if "\x00" in value.value:
                _add(found, limit, entry, NUL_RULE)
        elif values == _MESSAGE_VALUES:
            _find_nul(value, entry + ".", found, limit)


def _add(found: list[FieldViolation], limit: int, path: str, description: str) -> None:
    if len(found) < limit:
        found.append(FieldViolation(path, description))


# -- encodings: a walk of the wire format --------------------------------------------------


class _Malformed(Exception):
    """The walk's verdict: the field at `path` is wrongly encoded."""

    def __init__(self, path: str, description: str) -> None:
        super().__init__(path, description)
        self.path = path or WHOLE_REQUEST
        self.description = description


def encoding_violation(descriptor: Descriptor, data: bytes) -> FieldViolation | None:
    """The first field of `data` whose wire encoding is wrong for `descriptor`, or None when
    every known field is encoded as its type says (unknown fields are skipped, as parsers do).

    Named as precisely as the bytes allow: the field whose wire type, length or UTF-8 is
    wrong, with indexes and map keys (`snapshot.accounts[3].name`); an unreadable tag is blamed
    on the message holding it, and on `request` at the top level.
    """
    try:
        _walk(descriptor, data, 0, len(data), "", 0, None)
    except _Malformed as bad:
        return FieldViolation(bad.path, bad.description)
    return None


def _varint(data: bytes, pos: int, end: int, path: str, what: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(end, pos + 10)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    if end - pos >= 10:
        raise _Malformed(path, f"holds {what} longer than 10 bytes")
    raise _Malformed(path, f"is cut short: the bytes end inside {what}")


def _walk(
    descriptor: Descriptor,
    data: bytes,
    pos: int,
    end: int,
    prefix: str,
    depth: int,
    entry_paths: tuple[str, str] | None,
) -> None:
    """Check the fields of one message in data[pos:end]. `prefix` is its path plus a dot;
    `entry_paths` (inside a map entry) are the paths of its key and of its value."""
    if depth > MAX_DEPTH:
        raise _Malformed(prefix[:-1], f"nests messages more than {MAX_DEPTH} deep")
    here = prefix[:-1]
    counts: dict[int, int] = {}
    while pos < end:
        tag, pos = _varint(data, pos, end, here, "a field tag")
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > _MAX_FIELD_NUMBER or wire > _I32:
            raise _Malformed(here, f"holds an invalid field tag ({tag})")
        if wire == _EGROUP:
            raise _Malformed(here, f"holds the end of a group (field {number}) never started")
        field = descriptor.fields_by_number.get(number)
        if field is None or field.type == _FD.TYPE_GROUP:
            pos = _skip(data, pos, end, wire, number, here, depth)
            continue
        index = counts.get(number, 0)
        kind = field.message_type
        is_map = kind is not None and kind.GetOptions().map_entry
        if entry_paths is not None:
            path = entry_paths[0] if number == 1 else entry_paths[1]
        elif _is_repeated(field) and not is_map:
            path = f"{prefix}{field.name}[{index}]"
        else:
            path = prefix + field.name
        expected = _WIRE_OF_TYPE[field.type]
        if wire == _LEN and expected != _LEN and _is_repeated(field):
            pos, elements = _packed(data, pos, end, expected, prefix + field.name)
            counts[number] = index + elements
            continue
        counts[number] = index + 1
        if wire != expected:
            raise _Malformed(
                path,
                f"is sent as {_WIRE_NAMES[wire]}; a {_TYPE_NAMES[field.type]} field is sent "
                f"as {_WIRE_NAMES[expected]}",
            )
        if wire == _VARINT:
            _, pos = _varint(data, pos, end, path, "a varint")
        elif wire in (_I64, _I32):
            pos = _fixed(pos, end, 8 if wire == _I64 else 4, path)
        else:
            length, pos = _varint(data, pos, end, path, "its length")
            if length > end - pos:
                raise _Malformed(path, "is cut short: its length runs past the end of the bytes")
            if field.type == _FD.TYPE_STRING:
                try:
                    data[pos : pos + length].decode()
                except UnicodeDecodeError:
                    raise _Malformed(path, "is not valid UTF-8") from None
            elif kind is not None:
                paths: tuple[str, str] | None = None
                if is_map:
                    key = _map_key(kind, data, pos, pos + length)
                    paths = (path, path if key is None else path + map_key_path(key))
                elif kind.full_name in _WRAPPERS:
                    paths = (path, path)  # its one field is the value itself
                _walk(kind, data, pos, pos + length, path + ".", depth + 1, paths)
            pos += length


def _fixed(pos: int, end: int, width: int, path: str) -> int:
    if end - pos < width:
        raise _Malformed(path, "is cut short: the bytes end inside its value")
    return pos + width


def _packed(data: bytes, pos: int, end: int, wire: int, path: str) -> tuple[int, int]:
    """Check a packed run of scalars; returns where it ends and how many it holds."""
    length, pos = _varint(data, pos, end, path, "its length")
    if length > end - pos:
        raise _Malformed(path, "is cut short: its length runs past the end of the bytes")
    stop = pos + length
    if wire == _VARINT:
        if length and data[stop - 1] >= 0x80:
            raise _Malformed(path, "is cut short: its packed values end inside a varint")
        count = run = 0
        for byte in data[pos:stop]:
            if byte < 0x80:
                count += 1
                run = 0
            else:
                run += 1
                if run >= 10:
                    raise _Malformed(path, "holds a varint longer than 10 bytes")
        return stop, count
    width = 8 if wire == _I64 else 4
    if length % width:
        raise _Malformed(path, f"holds {length} bytes, not a whole number of {width}-byte values")
    return stop, length // width


def _skip(data: bytes, pos: int, end: int, wire: int, number: int, here: str, depth: int) -> int:
    """Step over an unknown field's value; `here` is blamed for what cannot be read."""
    what = f"is cut short: an unknown field ({number}) runs past the end of the bytes"
    if wire == _VARINT:
        _, pos = _varint(data, pos, end, here, f"an unknown field ({number})")
        return pos
    if wire in (_I64, _I32):
        width = 8 if wire == _I64 else 4
        if end - pos < width:
            raise _Malformed(here, what)
        return pos + width
    if wire == _LEN:
        length, pos = _varint(data, pos, end, here, f"the length of an unknown field ({number})")
        if length > end - pos:
            raise _Malformed(here, what)
        return pos + length
    # A group: fields up to the matching end.
    if depth >= MAX_DEPTH:
        raise _Malformed(here, f"nests groups more than {MAX_DEPTH} deep")
    while pos < end:
        tag, pos = _varint(data, pos, end, here, "a field tag")
        inner, inner_wire = tag >> 3, tag & 7
        if inner == 0 or inner > _MAX_FIELD_NUMBER or inner_wire > _I32:
            raise _Malformed(here, f"holds an invalid field tag ({tag})")
        if inner_wire == _EGROUP:
            if inner != number:
                raise _Malformed(here, f"ends group {number} with the end of group {inner}")
            return pos
        pos = _skip(data, pos, end, inner_wire, inner, here, depth + 1)
    raise _Malformed(here, f"is cut short: group {number} never ends")


def _map_key(entry: Descriptor, data: bytes, pos: int, end: int) -> object:
    """A map entry's key, read as leniently as possible to name the entry in a path; None when
    it cannot be read (the walk then reports why)."""
    key_field = entry.fields_by_number[1]
    key: object = _default_key(key_field)
    try:
        while pos < end:
            tag, pos = _varint(data, pos, end, "", "")
            number, wire = tag >> 3, tag & 7
            if number == 1 and wire == _WIRE_OF_TYPE[key_field.type]:
                if wire == _LEN:
                    length, pos = _varint(data, pos, end, "", "")
                    key = data[pos : pos + length].decode()
                    pos += length
                elif wire == _VARINT:
                    value, pos = _varint(data, pos, end, "", "")
                    key = _varint_key(key_field, value)
                else:
                    width = 8 if wire == _I64 else 4
                    key = _fixed_key(key_field, data[pos : pos + width])
                    pos += width
            elif wire in (_SGROUP, _EGROUP):
                return None
            else:
                pos = _skip(data, pos, end, wire, number, "", MAX_DEPTH)
    except (_Malformed, UnicodeDecodeError, ValueError):
        return None
    return key


def _default_key(field: FieldDescriptor) -> object:
    if field.type == _FD.TYPE_STRING:
        return ""
    if field.type == _FD.TYPE_BOOL:
        return False
    return 0


def _varint_key(field: FieldDescriptor, value: int) -> object:
    if field.type == _FD.TYPE_BOOL:
        return value != 0
    if field.type in (_FD.TYPE_SINT32, _FD.TYPE_SINT64):
        return (value >> 1) ^ -(value & 1)
    if field.type in (_FD.TYPE_INT32, _FD.TYPE_INT64):
        value &= (1 << 64) - 1
        if field.type == _FD.TYPE_INT32:
            value &= (1 << 32) - 1
            return value - (1 << 32) if value >= 1 << 31 else value
        return value - (1 << 64) if value >= 1 << 63 else value
    if field.type == _FD.TYPE_UINT32:
        return value & ((1 << 32) - 1)
    return value & ((1 << 64) - 1)


def _fixed_key(field: FieldDescriptor, raw: bytes) -> object:
    signed = field.type in (_FD.TYPE_SFIXED32, _FD.TYPE_SFIXED64)
    return int.from_bytes(raw, "little", signed=signed)
