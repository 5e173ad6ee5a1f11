"""Bad inputs for any protobuf request, derived from its descriptor.

Starting from one valid request (a seed), `mutations()` changes one thing at a time, recursing
through nested messages and repeated fields: every string gets NUL bytes, invalid UTF-8, control
characters, huge and empty values; every number its type's extremes (and int64 extremes on the
wire of an int32); every enum unknown values; every message is unset, emptied or replaced by
bytes that are no message; every field is sent with the wrong wire type (what a JSON type error
would become if a client encoded it anyway); update masks get bogus paths; page tokens are
forged in every shape; and the whole request is truncated, padded with unknown fields or cut in
the middle of a field. Strings that protobuf will not hold (invalid UTF-8) and wrong wire types
are written as raw bytes, so each mutation is the exact request bytes to send.

Pure functions, no I/O: the harness in `test_fuzz.py` sends them.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

Step = tuple[str, int | None]  # a field name, and the element's index for a repeated field
Path = tuple[Step, ...]
Build = Callable[[Message], bytes]
# Descriptors are typed loosely: protobuf's stubs tell its Python and upb classes apart.
Descriptor = Any
Field = Any

WHOLE = "(request)"  # the path of mutations of the request as a whole

# Wire types.
VARINT, FIXED64, LEN, START_GROUP, FIXED32 = 0, 1, 2, 3, 5
_WIRE_TYPES = {
    FieldDescriptor.TYPE_DOUBLE: FIXED64,
    FieldDescriptor.TYPE_FLOAT: FIXED32,
    FieldDescriptor.TYPE_INT64: VARINT,
    FieldDescriptor.TYPE_UINT64: VARINT,
    FieldDescriptor.TYPE_INT32: VARINT,
    FieldDescriptor.TYPE_FIXED64: FIXED64,
    FieldDescriptor.TYPE_FIXED32: FIXED32,
    FieldDescriptor.TYPE_BOOL: VARINT,
    FieldDescriptor.TYPE_STRING: LEN,
    FieldDescriptor.TYPE_MESSAGE: LEN,
    FieldDescriptor.TYPE_BYTES: LEN,
    FieldDescriptor.TYPE_UINT32: VARINT,
    FieldDescriptor.TYPE_ENUM: VARINT,
    FieldDescriptor.TYPE_SFIXED32: FIXED32,
    FieldDescriptor.TYPE_SFIXED64: FIXED64,
    FieldDescriptor.TYPE_SINT32: VARINT,
    FieldDescriptor.TYPE_SINT64: VARINT,
}
_SAMPLE_OF_WIRE_TYPE = {
    VARINT: b"\x01",
    FIXED64: b"\x00" * 8,
    LEN: b"\x01x",
    FIXED32: b"\x00" * 4,
}
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = {
    "nan": float("nan"),
    "infinity": float("inf"),
    "negative_infinity": float("-inf"),
    "negative": -1.0,
    "huge": 1e308,
    "negative_zero": -0.0,
    "subnormal": 5e-324,
}
_STRUCTURAL = (
    "wrong_wire_type",
    "overlong_varint",
    "cut_varint",
    "length_overrun",
    "not_a_message",
    "truncated_request",
    "field_number_zero",
    "wire_type_",
    "unterminated_group",
    "stray_end_group",
    "cut_key",
    "trailing_zero",
)
PAGE_TOKEN_SHARE = 4  # a page token gets this many mutations for every one of another field
# Id prefixes Canopy uses; an id of one type where another is expected.
_ID_PREFIXES = ("t", "o", "w", "i", "f", "c", "r", "a")


def varint(value: int) -> bytes:
    """Base-128 varint; a negative value takes ten bytes, as protobuf writes an int64."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """A field's key."""
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A field of wire type 2 (string, bytes, message)."""
    return tag(number, LEN) + varint(len(payload)) + payload


def encode(message: Message) -> bytes:
    """The message's bytes, deterministic."""
    return message.SerializeToString(deterministic=True)


def path_text(path: Path, leaf: str | None = None, index: int | None = None) -> str:
    """A field path as an error would name it: `snapshot.accounts[1].name`."""
    parts = [f"{name}[{i}]" if i is not None else name for name, i in path]
    if leaf is not None:
        parts.append(f"{leaf}[{index}]" if index is not None else leaf)
    return ".".join(parts) or WHOLE


def _message_class(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def navigate(message: Message, path: Path) -> Message:
    """The submessage at `path`, created on the way (elements appended) as needed."""
    current = message
    for name, index in path:
        value = getattr(current, name)
        if index is None:
            current = value
        else:
            while len(value) <= index:
                value.add()
            current = value[index]
    return current


def encode_patched(message: Message, path: Path, patch: Callable[[Message], bytes]) -> bytes:
    """The message's bytes, with the submessage at `path` encoded by `patch` instead.

    Other fields are written as usual; the patched branch is written last, element by element
    for a repeated field, so raw bytes (bad UTF-8, a wrong wire type) land exactly there.
    """
    if not path:
        return patch(message)
    name, index = path[0]
    field = message.DESCRIPTOR.fields_by_name[name]
    rest = type(message)()
    rest.CopyFrom(message)
    rest.ClearField(name)
    out = bytearray(encode(rest))
    if index is not None:
        elements = list(getattr(message, name))
        while len(elements) <= index:
            elements.append(_message_class(field.message_type)())
        for i, element in enumerate(elements):
            body = encode_patched(element, path[1:], patch) if i == index else encode(element)
            out += length_delimited(field.number, body)
    else:
        out += length_delimited(
            field.number, encode_patched(getattr(message, name), path[1:], patch)
        )
    return bytes(out)


@dataclass(frozen=True)
class Mutation:
    """One bad input: where (`path`), what kind, a short description, and how to build its
    bytes from the current seed (seeds can change between cases, e.g. a tree generation)."""

    path: str
    kind: str
    detail: str
    build: Build
    expensive: bool = False

    @property
    def structural(self) -> bool:
        """Broken encoding rather than a bad value: sent after the values of the same field."""
        return self.kind.startswith(_STRUCTURAL)

    def payload(self, seed: Message) -> bytes:
        """The request bytes for this seed."""
        return self.build(seed)


def _set_value(container: Path, field: Field, index: int | None, value: Any) -> Build:
    def build(seed: Message) -> bytes:
        message = type(seed)()
        message.CopyFrom(seed)
        target = navigate(message, container)
        if index is None:
            setattr(target, field.name, value)
        else:
            values = getattr(target, field.name)
            while len(values) <= index:
                values.append(value)
            values[index] = value
        return encode(message)

    return build


def _set_repeated(container: Path, field: Field, make: Callable[[list[Any]], list[Any]]) -> Build:
    def build(seed: Message) -> bytes:
        message = type(seed)()
        message.CopyFrom(seed)
        target = navigate(message, container)
        values = getattr(target, field.name)
        current = list(values)
        target.ClearField(field.name)
        values = getattr(target, field.name)
        new = make(current)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for element in new:
                values.add().CopyFrom(element)
        else:
            values.extend(new)
        return encode(message)

    return build


def _raw_field(container: Path, raw: Callable[[Message], bytes]) -> Build:
    """Raw bytes appended to the container message (last value wins for a singular field)."""

    def build(seed: Message) -> bytes:
        return encode_patched(seed, container, lambda sub: encode(sub) + raw(sub))

    return build


def _clear(container: Path, field: Field) -> Build:
    def build(seed: Message) -> bytes:
        message = type(seed)()
        message.CopyFrom(seed)
        navigate(message, container).ClearField(field.name)
        return encode(message)

    return build


def _set_empty_message(container: Path, field: Field) -> Build:
    def build(seed: Message) -> bytes:
        message = type(seed)()
        message.CopyFrom(seed)
        target = navigate(message, container)
        target.ClearField(field.name)
        getattr(target, field.name).SetInParent()
        return encode(message)

    return build


def constant(raw: bytes) -> Callable[[Message], bytes]:
    """Bytes to append whatever the (sub)message is."""
    return lambda _sub: raw


def _replacing(values: Sequence[Any]) -> Callable[[list[Any]], list[Any]]:
    """A new list of elements whatever the old ones were."""
    return lambda _old: list(values)


def _duplicating(values: list[Any]) -> list[Any]:
    return [values[0], *values]


def _many(field: Field) -> Callable[[list[Any]], list[Any]]:
    return lambda old: [_first_or_default(old, field)] * 1000


def _cut(at: int) -> Build:
    return lambda seed: encode(seed)[:at]


def _appending(raw: bytes) -> Build:
    return lambda seed: encode(seed) + raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# Values that are no position of any list: what a forged page token may carry.
TOKEN_SHAPES: dict[str, Any] = {
    "int": 1,
    "negative_int": -1,
    "null": None,
    "bool": True,
    "float": 1.5,
    "nan": float("nan"),
    "huge_number": 10**400,
    "int64_overflow": 2**63,
    "empty_string": "",
    "nul_string": "c_a\x00b",
    "long_string": "x" * 10_000,
    "empty_dict": {},
    "dict": {"id": "c_x", "after": [1, 2]},
    "empty_list": [],
    "list_of_int": [1],
    "list_wrong_shape": [["a"], {"b": None}, 3.5],
    "list_of_null": [None, None],
    "list_nul": ["a\x00", "b\x00"],
    "list_long": list(range(1000)),
}


def forged_page_tokens(
    real: str | None, foreign: Sequence[str], rng: random.Random
) -> list[tuple[str, str]]:
    """(kind, token) pairs: bare JSON of every shape, the real token re-signed by nobody with a
    wrong position (when it is readable at all), tampered, truncated, borrowed from another
    list, random bytes, deep nesting, huge."""
    forged: list[tuple[str, str]] = []
    for name, shape in TOKEN_SHAPES.items():
        forged.append((f"token_bare_{name}", _b64(json.dumps(shape).encode())))
    forged += [
        ("token_not_base64", "!!not*base64~~"),
        ("token_not_json", _b64(b"\xff\x00\x01garbage")),
        ("token_random_bytes", _b64(rng.randbytes(48))),
        ("token_deep_nesting", _b64(b"[" * 50_000 + b"]" * 50_000)),
        ("token_huge", "A" * 100_000),
        ("token_json_nul", _b64(b'{"a": "\\u0000", "f": "\\u0000"}')),
    ]
    if real:
        forged += [
            ("token_real", real),
            ("token_truncated", real[: len(real) // 2]),
            ("token_bit_flip", _flip_char(real, len(real) // 2)),
            ("token_padded", real + "=="),
            ("token_extended", real + "AAAA"),
        ]
        body = _readable_token(real)
        if isinstance(body, dict):
            for name, shape in TOKEN_SHAPES.items():
                for key in body:  # every slot of the real token gets every bad shape
                    forged.append(
                        (f"token_{key}_{name}", _b64(json.dumps({**body, key: shape}).encode()))
                    )
            forged += [
                ("token_missing_keys", _b64(b"{}")),
                ("token_extra_key", _b64(json.dumps({**body, "zz": 1}).encode())),
                ("token_as_list", _b64(json.dumps(list(body.values())).encode())),
            ]
    for i, other in enumerate(foreign):
        forged.append((f"token_foreign_{i}", other))
    return forged


def _flip_char(text: str, at: int) -> str:
    if not text:
        return "A"
    at = min(at, len(text) - 1)
    alphabet = string.ascii_letters + string.digits + "-_"
    replacement = alphabet[(alphabet.find(text[at]) + 7) % len(alphabet)]
    return text[:at] + replacement + text[at + 1 :]


def _readable_token(token: str) -> Any:
    """The JSON inside a token, if it is unauthenticated base64 JSON; else None."""
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Context:
    """What the generator knows beyond the seed: real page tokens, for forging."""

    page_token: str | None = None
    foreign_page_tokens: tuple[str, ...] = ()
    rng_seed: int = 0


def _string_values(field: Field, base: str, ctx: Context) -> Iterator[tuple[str, str, Any, bool]]:
    """(kind, detail, value, expensive) for a string; `value` bytes are raw (not UTF-8)."""
    seed = base or "x"
    middle = len(seed) // 2
    yield "empty", '""', "", False
    yield "nul", f"NUL inside {seed[:20]!r}", seed[:middle] + "\x00" + seed[middle:], False
    yield "nul_only", "a single NUL", "\x00", False
    yield "control", "control characters \\x01\\x1b\\x7f", seed + "\x01\x1b\x7f", False
    yield "newline", "a trailing newline", seed + "\n", False
    yield "invalid_utf8", "bytes ff fe", b"\xff\xfe" + seed.encode()[:8], False
    yield "truncated_utf8", "a cut 3-byte sequence", seed.encode() + b"\xe2\x82", False
    yield "surrogate_utf8", "an encoded surrogate ed a0 80", seed.encode() + b"\xed\xa0\x80", False
    yield "unicode", "non-ASCII letters and an emoji", "ümlaut-日本語-🙂", False
    yield "unicode_edge", "RTL override, zero-width, BOM, U+FFFF", "\u202e\u200b\ufeff\uffff", False
    yield "whitespace", "surrounding spaces", f" {seed} ", False
    yield "sql", "a quote and a comment", "' OR '1'='1' --", False
    yield "like_pattern", "LIKE wildcards", "%_\\%", False
    yield "uppercase", "upper-cased", seed.upper() if seed.upper() != seed else seed + "X", False
    yield "long_1025", "1025 characters", "a" * 1025, False
    yield "huge_100k", "100 KB", "a" * 100_000, True
    yield "huge_5m", "5 MB", "a" * 5_000_000, True
    name = field.name
    if name == "id" or name.endswith("_id") or name.endswith("_ids"):
        prefix, sep, rest = seed.partition("_")
        if sep and prefix in _ID_PREFIXES:
            other = next(p for p in _ID_PREFIXES if p != prefix)
            yield "id_other_type", f"a {other}_ id", f"{other}_{rest}", False
            yield "id_absent", "well-formed, no such item", f"{prefix}_{'0' * 20}", False
            yield "id_too_long", "prefix and 61 characters", f"{prefix}_{'a' * 61}", False
    if name == "page_token":
        rng = random.Random(ctx.rng_seed)
        for kind, token in forged_page_tokens(ctx.page_token, ctx.foreign_page_tokens, rng):
            yield kind, f"page token ({kind.removeprefix('token_')})", token, len(token) > 50_000


def _scalar_values(field: Field, base: Any) -> Iterator[tuple[str, str, Any]]:
    """(kind, detail, value) for numbers, booleans and enums set through protobuf."""
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        for kind, value in (
            ("negative_one", -1),
            ("zero", 0),
            ("one", 1),
            ("max", high),
            ("min", low),
            ("large", 10**9),
        ):
            if low <= value <= high and value != base:
                yield kind, str(value), value
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        for kind, number in _FLOATS.items():
            yield kind, repr(number), number
    elif field.type == FieldDescriptor.TYPE_BOOL:
        yield "flipped", str(not base), not base
    elif field.type == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        for kind, value in (
            ("unknown_enum_negative", -1),
            ("unknown_enum_next", max(numbers) + 1),
            ("unknown_enum_max", 2**31 - 1),
            ("unknown_enum_min", -(2**31)),
        ):
            yield kind, f"{value} (no such {field.enum_type.name})", value
        for defined in field.enum_type.values:
            if defined.number != base:
                yield f"enum_{defined.name}", defined.name, defined.number


def _wire_values(field: Field) -> Iterator[tuple[str, str, bytes]]:
    """(kind, detail, raw field bytes) that protobuf's API will not produce."""
    expected = _WIRE_TYPES[field.type]
    for wire_type, sample in _SAMPLE_OF_WIRE_TYPE.items():
        if wire_type != expected:
            yield (
                f"wrong_wire_type_{wire_type}",
                f"field {field.number} sent as wire type {wire_type}",
                tag(field.number, wire_type) + sample,
            )
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM):
        for kind, value in (("int64_max_on_wire", 2**63 - 1), ("int64_min_on_wire", -(2**63))):
            yield kind, f"{value} in an int32 field", tag(field.number, VARINT) + varint(value)
    if expected == VARINT:
        yield (
            "overlong_varint",
            "an 11-byte varint",
            tag(field.number, VARINT) + b"\xff" * 10 + b"\x01",
        )
        yield "cut_varint", "a varint cut short", tag(field.number, VARINT) + b"\xff"
    if field.type == FieldDescriptor.TYPE_BOOL:
        yield "bool_two", "varint 2 in a bool", tag(field.number, VARINT) + varint(2)
    if expected == LEN:
        yield (
            "length_overrun",
            "a length past the end",
            tag(field.number, LEN) + varint(1000) + b"x",
        )
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        yield (
            "not_a_message",
            "bytes ff ff ff as the message",
            length_delimited(field.number, b"\xff\xff\xff"),
        )


def _mask_values(seed_paths: Sequence[str]) -> Iterator[tuple[str, str, list[str]]]:
    first = seed_paths[0] if seed_paths else "handle"
    camel = "".join(p.capitalize() if i else p for i, p in enumerate(first.split("_")))
    yield "mask_unknown", "an unknown path", ["no_such_field"]
    for output in ("id", "etag", "create_time", "update_time"):
        yield f"mask_output_only_{output}", f"output-only {output!r}", [output]
    yield "mask_nested_nonsense", "a path through a scalar", [f"{first}.x.y.z"]
    yield "mask_deep_nonsense", "a deep unknown path", ["a.b.c.d.e.f.g"]
    yield "mask_duplicate", "every path twice", [*seed_paths, *seed_paths]
    yield "mask_empty_path", "an empty path", [""]
    yield "mask_star", "a wildcard", ["*"]
    yield "mask_camel_case", f"{camel!r}", [camel]
    yield "mask_trailing_dot", "a trailing dot", [f"{first}."]
    yield "mask_leading_dot", "a leading dot", [f".{first}"]
    yield "mask_with_index", "an index in a path", [f"{first}[0]"]
    yield "mask_none", "no paths", []
    yield "mask_many", "10,000 paths", [first] * 10_000


def _leaf_mutations(
    container: Path, field: Field, base: Any, index: int | None, ctx: Context
) -> Iterator[Mutation]:
    where = path_text(container, field.name, index)
    if field.type == FieldDescriptor.TYPE_STRING:
        for kind, detail, value, expensive in _string_values(field, base or "", ctx):
            if isinstance(value, bytes) and index is not None:
                # Not a str protobuf can hold: written raw, in place of the element.
                build = _replace_element_raw(container, field, index, value)
            elif isinstance(value, bytes):
                raw = length_delimited(field.number, value)  # appended: the last value wins
                build = _raw_field(container, constant(raw))
            else:
                build = _set_value(container, field, index, value)
            yield Mutation(where, kind, detail, build, expensive)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        yield Mutation(where, "empty", "no bytes", _set_value(container, field, index, b""))
        yield Mutation(
            where,
            "huge_100k",
            "100 KB",
            _set_value(container, field, index, b"\xff" * 100_000),
            True,
        )
    else:
        for kind, detail, value in _scalar_values(field, base):
            yield Mutation(where, kind, detail, _set_value(container, field, index, value))


def _replace_element_raw(container: Path, field: Field, index: int, value: bytes) -> Build:
    """A repeated string whose element `index` is the raw (invalid) bytes `value`."""

    def patch(sub: Message) -> bytes:
        rest = type(sub)()
        rest.CopyFrom(sub)
        rest.ClearField(field.name)
        elements = [e.encode() for e in getattr(sub, field.name)]
        while len(elements) <= index:
            elements.append(b"")
        elements[index] = value
        return encode(rest) + b"".join(length_delimited(field.number, e) for e in elements)

    return lambda seed: encode_patched(seed, container, patch)


def _field_mutations(
    message: Message, container: Path, field: Field, ctx: Context, depth: int
) -> Iterator[Mutation]:
    where = path_text(container, field.name)
    repeated = field.is_repeated
    for kind, detail, raw in _wire_values(field):
        yield Mutation(where, kind, detail, _raw_field(container, constant(raw)))
    if (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.full_name == "google.protobuf.FieldMask"
    ):
        seed_paths = list(getattr(message, field.name).paths)
        mask_path = (*container, (field.name, None))
        paths_field = field.message_type.fields_by_name["paths"]
        for kind, detail, paths in _mask_values(seed_paths):
            yield Mutation(
                path_text(mask_path, "paths"),
                kind,
                detail,
                _set_repeated(mask_path, paths_field, _replacing(paths)),
                expensive=len(paths) > 1000,
            )
    if repeated:
        current = list(getattr(message, field.name))
        if current:
            yield Mutation(
                where,
                "repeated_none",
                "no elements",
                _set_repeated(container, field, _replacing([])),
            )
            yield Mutation(
                where,
                "repeated_duplicate",
                "the first element twice",
                _set_repeated(container, field, _duplicating),
            )
        yield Mutation(
            where,
            "repeated_many",
            "1,000 elements",
            _set_repeated(container, field, _many(field)),
            expensive=True,
        )
        indexes = sorted({0, len(current) - 1}) if current else [0]
        for index in indexes:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                element = (
                    current[index] if index < len(current) else _message_class(field.message_type)()
                )
                yield from _message_mutations(
                    element, (*container, (field.name, index)), ctx, depth + 1
                )
            else:
                base = current[index] if index < len(current) else None
                yield from _leaf_mutations(container, field, base, index, ctx)
        return
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        present = message.HasField(field.name)
        if present:
            yield Mutation(where, "unset", "field left out", _clear(container, field))
        yield Mutation(
            where, "empty_message", "an empty message", _set_empty_message(container, field)
        )
        sub = getattr(message, field.name)
        yield from _message_mutations(sub, (*container, (field.name, None)), ctx, depth + 1)
        return
    base = getattr(message, field.name)
    yield from _leaf_mutations(container, field, base, None, ctx)


def _first_or_default(current: list[Any], field: Field) -> Any:
    if current:
        return current[0]
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message_class(field.message_type)()
    if field.type == FieldDescriptor.TYPE_STRING:
        return "x"
    return 1


def _message_mutations(
    message: Message, container: Path, ctx: Context, depth: int
) -> Iterator[Mutation]:
    if depth > 6:  # no request nests deeper; a recursive type stops here
        return
    for field in message.DESCRIPTOR.fields:
        yield from _field_mutations(message, container, field, ctx, depth)


def _whole_mutations(seed: Message) -> Iterator[Mutation]:
    """Mutations of the request as a whole: truncations, unknown and broken fields."""
    size = len(encode(seed))
    cuts = sorted({1, size // 3, size // 2, size - 1} - {0, size}) if size > 1 else []
    for cut in cuts:
        yield Mutation(
            WHOLE,
            f"truncated_request_{cut}_of_{size}",
            f"the first {cut} of {size} bytes",
            _cut(cut),
        )
    extras = [
        ("empty_request", "no bytes at all", None),
        ("unknown_field_varint", "field 999 = 1", tag(999, VARINT) + varint(1)),
        ("unknown_field_bytes", "field 12345 = 'hello'", length_delimited(12345, b"hello")),
        ("unknown_field_max_number", "field 536870911 = 1", tag(2**29 - 1, VARINT) + varint(1)),
        ("unknown_field_huge", "field 999 = 1 MB", length_delimited(999, b"z" * 1_000_000)),
        ("field_number_zero", "a field numbered 0", tag(0, VARINT) + varint(1)),
        ("wire_type_6", "a key with wire type 6", bytes([(7 << 3) | 6, 1])),
        ("wire_type_7", "a key with wire type 7", bytes([(7 << 3) | 7, 1])),
        ("unterminated_group", "a group that never ends", tag(999, START_GROUP)),
        ("stray_end_group", "an end-group key", tag(999, 4)),
        ("length_overrun", "a length past the end", tag(999, LEN) + varint(10_000) + b"x"),
        ("cut_key", "a key cut short", b"\xff"),
        ("trailing_zero", "a zero byte", b"\x00"),
    ]
    for kind, detail, raw in extras:
        if raw is None:
            yield Mutation(WHOLE, kind, detail, constant(b""))
        else:
            yield Mutation(
                WHOLE,
                kind,
                detail,
                _appending(raw),
                expensive=len(raw) > 100_000,
            )


def mutations(seed: Message, ctx: Context | None = None) -> list[Mutation]:
    """Every deterministic mutation of `seed`, whole-request ones first."""
    ctx = ctx or Context()
    return [*_whole_mutations(seed), *_message_mutations(seed, (), ctx, 0)]


def random_mutation(seed: Message, rng: random.Random) -> Mutation:
    """One random mutation, for long runs: a random field given a random value, or random
    bit flips in the request."""
    leaves = list(_leaves(seed.DESCRIPTOR, (), 0))
    if not leaves or rng.random() < 0.25:
        flips = [rng.randrange(1 << 16) for _ in range(rng.randint(1, 4))]

        def flip(s: Message, flips: list[int] = flips) -> bytes:
            data = bytearray(encode(s) or b"\x00")
            for f in flips:
                data[f % len(data)] ^= 1 << (f >> 13)
            return bytes(data)

        return Mutation(WHOLE, "random_bit_flips", f"bits flipped at {flips}", flip)
    container, field = rng.choice(leaves)
    where = path_text(container, field.name)
    number = field.number
    if field.type == FieldDescriptor.TYPE_STRING:
        length = rng.choice([1, 2, 8, 64, 300, 2000])
        raw = bytes(
            rng.choice([rng.randrange(256), rng.randrange(32), rng.randrange(0x41, 0x7B)])
            for _ in range(length)
        )
        return Mutation(
            where,
            "random_string_bytes",
            f"{length} random bytes {raw[:16]!r}…",
            _raw_field(container, constant(length_delimited(number, raw))),
        )
    if (
        field.type in _INT_RANGES
        or field.type == FieldDescriptor.TYPE_ENUM
        or field.type == FieldDescriptor.TYPE_BOOL
    ):
        value = rng.choice(
            [rng.randrange(-(2**63), 2**63), rng.randrange(-1000, 1000), rng.randrange(2**64)]
        )
        return Mutation(
            where,
            "random_varint",
            str(value),
            _raw_field(container, constant(tag(number, VARINT) + varint(value))),
        )
    if field.type in (
        FieldDescriptor.TYPE_DOUBLE,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        raw = rng.randbytes(8)
        return Mutation(
            where,
            "random_fixed64",
            raw.hex(),
            _raw_field(container, constant(tag(number, FIXED64) + raw)),
        )
    raw = rng.randbytes(rng.choice([1, 4, 16, 64]))
    return Mutation(
        where,
        "random_bytes",
        raw.hex(),
        _raw_field(container, constant(length_delimited(number, raw))),
    )


def _leaves(
    descriptor: Descriptor, container: Path, depth: int
) -> Iterator[tuple[Path, FieldDescriptor]]:
    if depth > 6:
        return
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            index = 0 if field.is_repeated else None
            yield from _leaves(field.message_type, (*container, (field.name, index)), depth + 1)
        else:
            yield container, field


def select(
    found: Sequence[Mutation], budget: int, rng: random.Random, max_expensive: int
) -> list[Mutation]:
    """At most `budget` mutations, spread over every field before any field gets a second one
    (round robin over paths; each path's bad values in random order, then its broken
    encodings), with at most `max_expensive` huge ones."""
    groups: dict[str, list[Mutation]] = {}
    for mutation in found:
        groups.setdefault(mutation.path, []).append(mutation)
    for path, group in groups.items():
        values = [m for m in group if not m.structural]
        broken = [m for m in group if m.structural]
        rng.shuffle(values)
        rng.shuffle(broken)
        groups[path] = [*broken, *values]  # popped from the end: values first
    chosen: list[Mutation] = []
    expensive = 0
    while len(chosen) < budget and any(groups.values()):
        for path, group in groups.items():
            # Forged page tokens come in many shapes, each a different way to crash a list.
            for _ in range(PAGE_TOKEN_SHARE if path.endswith("page_token") else 1):
                while group:
                    mutation = group.pop()
                    if mutation.expensive:
                        if expensive >= max_expensive:
                            continue
                        expensive += 1
                    chosen.append(mutation)
                    break
                if len(chosen) >= budget:
                    return chosen
    return chosen
