"""Wrong JSON types for every field of a request, as an operator would type them into `buf curl`
(grpcurl encodes JSON the same way, through protobuf's JSON mapping).

A JSON client encodes JSON to protobuf before it sends anything: a value of the wrong type is
refused on the client, and what reaches a server is always well-typed protobuf. The fuzz test
sends these through `buf curl` to learn which (if any) get through, and judges those that do
like every other input. Pure functions, no I/O.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# Values of the wrong JSON type, by the kind of field they are put in.
WRONG: dict[str, list[tuple[str, Any]]] = {
    "string": [("number", 123), ("bool", True), ("object", {"a": 1}), ("list", ["a"])],
    "int": [("word", "abc"), ("fraction", 1.5), ("huge", 1e30), ("bool", True), ("object", {})],
    "double": [("word", "abc"), ("bool", True), ("list", [1.0])],
    "bool": [("word", "yes"), ("number", 1), ("list", [True])],
    "enum": [("unknown_name", "NO_SUCH_VALUE"), ("unknown_number", 99), ("fraction", 1.5)],
    "message": [("word", "text"), ("number", 1), ("list", [{}])],
    "repeated": [("scalar", "one"), ("object", {"a": 1}), ("null_element", [None])],
    "duration": [("word", "forever"), ("no_unit", "10"), ("number", 5)],
    "timestamp": [("word", "yesterday"), ("bad_date", "2024-13-45T00:00:00Z")],
    "field_mask": [("number", 1), ("object", {"paths": 1})],
}
_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_WELL_KNOWN = {
    "google.protobuf.Duration": "duration",
    "google.protobuf.Timestamp": "timestamp",
    "google.protobuf.FieldMask": "field_mask",
}


@dataclass(frozen=True)
class JsonInput:
    """A request body with one field of the wrong JSON type."""

    path: str
    kind: str  # the kind of field
    value: str  # what was put there
    body: str  # the JSON document


def kind_of(field: Any) -> str:
    """Which list of wrong values applies to a field."""
    if field.is_repeated:
        return "repeated"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _WELL_KNOWN.get(field.message_type.full_name, "message")
    if field.type in _INTS:
        return "int"
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return "double"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "bool"
    if field.type == FieldDescriptor.TYPE_ENUM:
        return "enum"
    return "string"


def json_inputs(seed: Message, depth: int = 3) -> list[JsonInput]:
    """Every field of the seed's type (to `depth`), each given every wrong value of its kind."""
    base = json_format.MessageToDict(seed, preserving_proto_field_name=True)
    found = []
    for path, field in _fields(seed.DESCRIPTOR, (), depth):
        kind = kind_of(field)
        for name, value in WRONG[kind]:
            body = copy.deepcopy(base)
            _put(body, path, field, value)
            found.append(JsonInput(".".join(path), kind, name, json.dumps(body)))
    unknown = {**base, "no_such_field": 1}
    found.append(JsonInput("no_such_field", "unknown", "number", json.dumps(unknown)))
    return found


def _fields(
    descriptor: Any, path: tuple[str, ...], depth: int
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for field in descriptor.fields:
        here = (*path, field.name)
        yield here, field
        nested = (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.is_repeated
            and field.message_type.full_name not in _WELL_KNOWN
        )
        if nested and depth > 1:
            yield from _fields(field.message_type, here, depth - 1)


def _put(body: dict[str, Any], path: tuple[str, ...], field: Any, value: Any) -> None:
    """Set `value` at `path`, making the parents, and leaving out the field's oneof siblings."""
    target = body
    for name in path[:-1]:
        child = target.get(name)
        if not isinstance(child, dict):
            child = target[name] = {}
        target = child
    if field.containing_oneof is not None:
        for sibling in field.containing_oneof.fields:
            target.pop(sibling.name, None)
    target[path[-1]] = value
