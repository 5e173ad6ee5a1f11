"""The edge's rule for request bytes and text, as pure functions: which field a malformed
encoding is blamed on, and the path of every string holding a NUL, for every shape a request
can take (nested and repeated messages, maps, oneofs, wrappers, packed scalars).

A probe message type is built here from a descriptor (no .proto file in the tree needs these
shapes), under a package of its own."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from canopy.integration.v1 import connection_tree_pb2 as tree_pb
from canopy.integration.v1 import connection_tree_service_pb2 as tree_rpc
from canopy_core.errors import FieldViolation
from canopy_core.request_checks import (
    MALFORMED,
    NUL_IN_TEXT,
    WHOLE_REQUEST,
    RefusedRequest,
    checked_deserializer,
    encoding_violation,
    map_key_path,
    nul_violations,
)

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED


def _field(
    name: str,
    number: int,
    kind: int,
    label: int = OPTIONAL,
    type_name: str = "",
    oneof: int | None = None,
) -> F:
    built = F(name=name, number=number, type=kind, label=label, json_name=name)  # type: ignore[arg-type]
    if type_name:
        built.type_name = type_name
    if oneof is not None:
        built.oneof_index = oneof
    return built


def _map_entry(
    name: str, key: int, value: int, value_type: str = ""
) -> descriptor_pb2.DescriptorProto:
    entry = descriptor_pb2.DescriptorProto(name=name)
    entry.options.map_entry = True
    entry.field.append(_field("key", 1, key))
    entry.field.append(_field("value", 2, value, type_name=value_type))
    return entry


def _build() -> tuple[Any, Any]:
    pool = descriptor_pool.Default()  # where wrappers_pb2.StringValue lives
    file = descriptor_pb2.FileDescriptorProto(
        name="canopy/test/checks.proto",
        package="canopy.test",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    leaf = file.message_type.add(name="Leaf")
    leaf.field.extend(
        [
            _field("name", 1, F.TYPE_STRING),
            _field("blob", 2, F.TYPE_BYTES),
            _field("count", 3, F.TYPE_INT64),
            _field("tags", 4, F.TYPE_STRING, REPEATED),
        ]
    )
    probe = file.message_type.add(name="Probe")
    probe.oneof_decl.add(name="choice")
    probe.nested_type.extend(
        [
            _map_entry("LabelsEntry", F.TYPE_STRING, F.TYPE_STRING),
            _map_entry("LeavesByNameEntry", F.TYPE_STRING, F.TYPE_MESSAGE, ".canopy.test.Leaf"),
            _map_entry("ByNumberEntry", F.TYPE_SINT32, F.TYPE_STRING),
            _map_entry("FlagsEntry", F.TYPE_BOOL, F.TYPE_STRING),
            _map_entry(
                "WrappedEntry", F.TYPE_STRING, F.TYPE_MESSAGE, ".google.protobuf.StringValue"
            ),
            _map_entry("CountsEntry", F.TYPE_STRING, F.TYPE_INT64),
        ]
    )
    probe.field.extend(
        [
            _field("title", 1, F.TYPE_STRING),
            _field("leaf", 2, F.TYPE_MESSAGE, type_name=".canopy.test.Leaf"),
            _field("leaves", 3, F.TYPE_MESSAGE, REPEATED, ".canopy.test.Leaf"),
            _field("labels", 4, F.TYPE_MESSAGE, REPEATED, ".canopy.test.Probe.LabelsEntry"),
            _field(
                "leaves_by_name",
                5,
                F.TYPE_MESSAGE,
                REPEATED,
                ".canopy.test.Probe.LeavesByNameEntry",
            ),
            _field("by_number", 6, F.TYPE_MESSAGE, REPEATED, ".canopy.test.Probe.ByNumberEntry"),
            _field("text", 7, F.TYPE_STRING, oneof=0),
            _field("other", 8, F.TYPE_MESSAGE, type_name=".canopy.test.Leaf", oneof=0),
            _field("nickname", 9, F.TYPE_MESSAGE, type_name=".google.protobuf.StringValue"),
            _field("aliases", 10, F.TYPE_MESSAGE, REPEATED, ".google.protobuf.StringValue"),
            _field("numbers", 11, F.TYPE_INT64, REPEATED),
            _field("payload", 12, F.TYPE_BYTES),
            _field("notes", 13, F.TYPE_STRING, REPEATED),
            _field("code", 14, F.TYPE_FIXED32),
            _field("ratio", 15, F.TYPE_DOUBLE),
            _field("flags", 16, F.TYPE_MESSAGE, REPEATED, ".canopy.test.Probe.FlagsEntry"),
            _field("wrapped", 17, F.TYPE_MESSAGE, REPEATED, ".canopy.test.Probe.WrappedEntry"),
            _field("child", 18, F.TYPE_MESSAGE, type_name=".canopy.test.Probe"),
            _field("on", 19, F.TYPE_BOOL),
            _field("counts", 20, F.TYPE_MESSAGE, REPEATED, ".canopy.test.Probe.CountsEntry"),
            _field("ids", 21, F.TYPE_FIXED64, REPEATED),
        ]
    )
    pool.AddSerializedFile(file.SerializeToString())
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("canopy.test.Probe")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("canopy.test.Leaf")),
    )


Probe, Leaf = _build()
PROBE: Descriptor = Probe.DESCRIPTOR


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, body: bytes) -> bytes:
    return tag(number, 2) + varint(len(body)) + body


def blamed(data: bytes, descriptor: Descriptor = PROBE) -> str:
    violation = encoding_violation(descriptor, data)
    assert violation is not None
    return violation.field


def paths(message: Any) -> list[str]:
    return [v.field for v in nul_violations(message)]


# -- NUL in text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: Probe(title="a\x00b"), ["title"]),
        (lambda: Probe(title="\x00"), ["title"]),
        (lambda: Probe(leaf=Leaf(name="x\x00")), ["leaf.name"]),
        (lambda: Probe(leaf=Leaf(tags=["ok", "no\x00", "\x00"])), ["leaf.tags[1]", "leaf.tags[2]"]),
        (lambda: Probe(leaves=[Leaf(name="a"), Leaf(), Leaf(name="\x00")]), ["leaves[2].name"]),
        (lambda: Probe(leaves=[Leaf(tags=["a", "b\x00"])]), ["leaves[0].tags[1]"]),
        (lambda: Probe(labels={"env": "pro\x00d"}), ['labels["env"]']),
        (lambda: Probe(labels={"e\x00nv": "prod"}), ["labels"]),
        (lambda: Probe(leaves_by_name={"web": Leaf(name="\x00")}), ['leaves_by_name["web"].name']),
        (
            lambda: Probe(leaves_by_name={"web": Leaf(tags=["", "\x00"])}),
            ['leaves_by_name["web"].tags[1]'],
        ),
        (lambda: Probe(by_number={-7: "\x00"}), ["by_number[-7]"]),
        (lambda: Probe(flags={True: "\x00"}), ["flags[true]"]),
        (lambda: Probe(text="\x00"), ["text"]),
        (lambda: Probe(other=Leaf(name="\x00")), ["other.name"]),
        (lambda: Probe(nickname=wrappers_pb2.StringValue(value="\x00")), ["nickname"]),
        (
            lambda: Probe(
                aliases=[
                    wrappers_pb2.StringValue(value="a"),
                    wrappers_pb2.StringValue(value="\x00"),
                ]
            ),
            ["aliases[1]"],
        ),
        (lambda: Probe(wrapped={"k": wrappers_pb2.StringValue(value="\x00")}), ['wrapped["k"]']),
        (lambda: Probe(notes=["\x00", "fine", "x\x00y"]), ["notes[0]", "notes[2]"]),
        (
            lambda: Probe(child=Probe(child=Probe(leaf=Leaf(name="\x00")))),
            ["child.child.leaf.name"],
        ),
        (
            lambda: Probe(title="\x00", leaf=Leaf(name="\x00"), notes=["\x00"]),
            ["title", "leaf.name", "notes[0]"],
        ),
    ],
)
def test_every_string_holding_a_nul_is_named_by_its_path(build: Any, expected: list[str]) -> None:
    assert paths(build()) == expected


def test_bytes_numbers_and_clean_text_are_not_nul_violations() -> None:
    message = Probe(
        title="title with\ttabs\nand unicode ✓",
        payload=b"\x00\x00binary",
        leaf=Leaf(blob=b"\x00", count=0, name="ok"),
        numbers=[0, 256, -1],
        code=0,
        ratio=0.0,
        counts={"zero": 0},
        ids=[0, 1 << 40],
        labels={"": ""},
    )
    assert b"\x00" in message.SerializeToString()
    assert paths(message) == []


def test_at_most_ten_nul_violations_are_reported() -> None:
    message = Probe(notes=["\x00"] * 25)
    assert paths(message) == [f"notes[{i}]" for i in range(10)]


def test_the_paths_of_a_real_snapshot_request() -> None:
    request = tree_rpc.ApplyDiscoverySnapshotRequest(
        integration_id="i_1",
        snapshot=tree_pb.OrganizationSnapshot(
            organizational_units=[tree_pb.OrganizationalUnit(id="ou-1", name="O\x00U")],
            accounts=[tree_pb.Account(id=str(n), name="ok") for n in range(3)]
            + [tree_pb.Account(id="3", name="bad\x00", email="e\x00@example.com")],
        ),
    )
    assert paths(request) == [
        "snapshot.organizational_units[0].name",
        "snapshot.accounts[3].name",
        "snapshot.accounts[3].email",
    ]


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("env", '["env"]'),
        ('a"b', '["a\\"b"]'),
        ("é", '["\\u00e9"]'),
        ("k" * 70, '["' + "k" * 64 + '\\u2026"]'),
        (7, "[7]"),
        (-3, "[-3]"),
        (True, "[true]"),
        (False, "[false]"),
    ],
)
def test_map_keys_in_paths(key: object, shown: str) -> None:
    assert map_key_path(key) == shown


# -- malformed bytes ------------------------------------------------------------------------------

LEAF_BYTES = Leaf(name="web", tags=["a", "b"]).SerializeToString()


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        # A string sent as a varint, a 64-bit, a 32-bit value, a group.
        (tag(1, 0) + varint(5), "title", "varint"),
        (tag(1, 1) + b"\x00" * 8, "title", "64-bit"),
        (tag(1, 5) + b"\x00" * 4, "title", "32-bit"),
        (tag(19, 2) + varint(1) + b"\x01", "on", "length-delimited"),
        (tag(14, 0) + varint(1), "code", "varint"),
        (tag(2, 0) + varint(1), "leaf", "varint"),
        (length_delimited(2, tag(1, 0) + varint(3)), "leaf.name", "varint"),
        (
            length_delimited(3, LEAF_BYTES) + length_delimited(3, tag(3, 2) + b"\x00"),
            "leaves[1].count",
            "int64",
        ),
        (
            length_delimited(3, LEAF_BYTES) * 3 + length_delimited(3, tag(4, 0) + b"\x01"),
            "leaves[3].tags[0]",
            "varint",
        ),
        (
            length_delimited(2, length_delimited(4, b"a") + tag(4, 0) + b"\x01"),
            "leaf.tags[1]",
            "varint",
        ),
        (tag(4, 0) + varint(1), "labels", "varint"),
        (
            length_delimited(4, length_delimited(1, b"env") + tag(2, 0) + b"\x01"),
            'labels["env"]',
            "varint",
        ),
        (
            length_delimited(4, tag(2, 0) + b"\x01" + length_delimited(1, b"env")),
            'labels["env"]',
            "varint",
        ),
        (length_delimited(4, tag(1, 0) + b"\x01"), "labels", "varint"),
        (
            length_delimited(6, tag(1, 0) + varint(5) + tag(2, 0) + b"\x01"),
            "by_number[-3]",
            "varint",
        ),
        (
            length_delimited(
                5, length_delimited(1, b"web") + length_delimited(2, tag(1, 0) + b"\x01")
            ),
            'leaves_by_name["web"].name',
            "varint",
        ),
        (length_delimited(9, tag(1, 0) + b"\x01"), "nickname", "varint"),
        (
            length_delimited(10, b"") + length_delimited(10, tag(1, 0) + b"\x01"),
            "aliases[1]",
            "varint",
        ),
        (length_delimited(8, tag(1, 0) + b"\x01"), "other.name", "varint"),
        (tag(7, 0) + b"\x01", "text", "varint"),
        (
            length_delimited(18, length_delimited(18, tag(13, 5) + b"\x00" * 4)),
            "child.child.notes[0]",
            "32-bit",
        ),
        (tag(21, 0) + b"\x01", "ids[0]", "varint"),
    ],
)
def test_a_field_sent_with_the_wrong_wire_type_is_named(
    data: bytes, field: str, words: str
) -> None:
    violation = encoding_violation(PROBE, data)
    assert violation is not None
    assert violation.field == field
    assert words in violation.description


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (length_delimited(1, b"\xff\xfe"), "title"),
        (length_delimited(1, b"\xed\xa0\x80"), "title"),  # an encoded surrogate
        (length_delimited(1, b"\xc0\x80"), "title"),  # an overlong NUL
        (length_delimited(1, b"ok\xe2\x82"), "title"),  # a character cut in half
        (length_delimited(2, length_delimited(1, b"\xff")), "leaf.name"),
        (
            length_delimited(3, b"")
            + length_delimited(3, length_delimited(4, b"ok") + length_delimited(4, b"\xff")),
            "leaves[1].tags[1]",
        ),
        (
            length_delimited(4, length_delimited(1, b"k") + length_delimited(2, b"\xff")),
            'labels["k"]',
        ),
        (length_delimited(4, length_delimited(1, b"\xff") + length_delimited(2, b"v")), "labels"),
        (length_delimited(9, length_delimited(1, b"\xff")), "nickname"),
        (length_delimited(13, b"ok") + length_delimited(13, b"\x80"), "notes[1]"),
        (length_delimited(7, b"\xff"), "text"),
    ],
)
def test_invalid_utf8_is_named(data: bytes, field: str) -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        Probe.FromString(data)  # the parser refuses it, without a field
    violation = encoding_violation(PROBE, data)
    assert violation == FieldViolation(field, "is not valid UTF-8")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (length_delimited(1, b"hello")[:-2], "title"),
        (tag(1, 2), "title"),
        (tag(1, 2) + b"\x80", "title"),
        (tag(15, 1) + b"\x00" * 7, "ratio"),
        (tag(14, 5) + b"\x00" * 3, "code"),
        (tag(19, 0), "on"),
        (tag(19, 0) + b"\x80\x80", "on"),
        (tag(19, 0) + b"\xff" * 10 + b"\x01", "on"),  # longer than 10 bytes
        (length_delimited(2, length_delimited(1, b"web"))[:-1], "leaf"),
        (length_delimited(2, tag(1, 2) + varint(10) + b"web"), "leaf.name"),
        (length_delimited(3, LEAF_BYTES) + length_delimited(3, LEAF_BYTES)[:-3], "leaves[1]"),
        (length_delimited(11, b"\x01\x80"), "numbers"),  # packed, ends inside a varint
        (length_delimited(21, b"\x00" * 12), "ids"),  # packed fixed64, not a multiple of 8
        (tag(1, 2) + b"\xff" * 10 + b"\x01", "title"),
    ],
)
def test_a_truncated_field_is_named(data: bytes, field: str) -> None:
    with pytest.raises(DecodeError):  # the parser refuses it, without naming a field
        Probe.FromString(data)
    violation = encoding_violation(PROBE, data)
    assert violation is not None
    assert violation.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x80", WHOLE_REQUEST),  # a tag cut short
        (b"\x00\x01", WHOLE_REQUEST),  # field number 0
        (tag(1, 6), WHOLE_REQUEST),  # wire types 6 and 7 do not exist
        (tag(1, 7), WHOLE_REQUEST),
        (tag(99, 4), WHOLE_REQUEST),  # a group end never started
        (tag(99, 3) + tag(1, 0) + b"\x01", WHOLE_REQUEST),  # a group never ended
        (tag(99, 3) + tag(98, 4), WHOLE_REQUEST),  # a group ended by another
        (varint(1 << 32), WHOLE_REQUEST),  # a field number past 2^29 - 1
        (tag(99, 2) + varint(100) + b"x", WHOLE_REQUEST),  # an unknown field cut short
        (tag(99, 1) + b"\x00", WHOLE_REQUEST),
        (length_delimited(2, b"\x80"), "leaf"),  # the same, inside a known message
        (length_delimited(2, tag(99, 4)), "leaf"),
        (length_delimited(3, b"") + length_delimited(3, tag(77, 0)), "leaves[1]"),
    ],
)
def test_an_unreadable_tag_is_blamed_on_the_message_holding_it(data: bytes, field: str) -> None:
    with pytest.raises(DecodeError):
        Probe.FromString(data)
    assert blamed(data) == field


@pytest.mark.parametrize(
    "message",
    [
        Probe(),
        Probe(title="t", leaf=Leaf(name="n", tags=["a"], blob=b"\x00", count=-1)),
        Probe(labels={"a": "b", "": ""}, by_number={-1: "x", 0: ""}, flags={False: "f"}),
        Probe(leaves_by_name={"w": Leaf(name="x")}, wrapped={"k": wrappers_pb2.StringValue()}),
        Probe(numbers=[1, -1, 1 << 62], ids=[0, 7], code=3, ratio=-0.5, on=True),
        Probe(aliases=[wrappers_pb2.StringValue(value="a")], nickname=wrappers_pb2.StringValue()),
        Probe(child=Probe(child=Probe(text="deep")), other=Leaf()),
    ],
)
def test_a_valid_encoding_has_no_violation(message: Any) -> None:
    data = message.SerializeToString()
    assert encoding_violation(PROBE, data) is None


def test_valid_encodings_a_parser_accepts_are_not_violations() -> None:
    unpacked = tag(11, 0) + varint(1) + tag(11, 0) + varint(2)  # a packable field, unpacked
    unknown = tag(99, 0) + varint(1) + length_delimited(98, b"\xff") + tag(97, 3) + tag(97, 4)
    explicit_zero = tag(19, 0) + varint(0) + length_delimited(1, b"")
    merged = length_delimited(2, length_delimited(1, b"a")) + length_delimited(
        2, tag(3, 0) + b"\x01"
    )
    ten_byte_varint = tag(19, 0) + b"\xff" * 9 + b"\x01"
    for data in (unpacked, unknown, explicit_zero, merged, ten_byte_varint):
        Probe.FromString(data)
        assert encoding_violation(PROBE, data) is None


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    data = b""
    for _ in range(120):
        data = length_delimited(18, data)
    violation = encoding_violation(PROBE, data)
    assert violation is not None
    assert violation.field.startswith("child.child.")
    assert "deep" in violation.description


# -- the checked deserializer ------------------------------------------------------------------

check = checked_deserializer(Probe.FromString, PROBE)


def refusal(data: bytes) -> RefusedRequest:
    result = check(data)
    assert isinstance(result, RefusedRequest), result
    return result


def test_a_clean_request_is_parsed_as_usual() -> None:
    message = Probe(title="t", payload=b"\x00", leaf=Leaf(name="n"), labels={"a": "b"})
    assert check(message.SerializeToString()) == message


def test_a_nul_is_refused_with_every_path() -> None:
    error = refusal(
        Probe(title="\x00", leaves=[Leaf(), Leaf(name="\x00")]).SerializeToString()
    ).error
    assert error.reason == NUL_IN_TEXT
    assert [v.field for v in error.violations] == ["title", "leaves[1].name"]


def test_undecodable_bytes_are_refused_naming_the_field() -> None:
    error = refusal(length_delimited(2, length_delimited(1, b"\xff"))).error
    assert error.reason == MALFORMED
    assert [v.field for v in error.violations] == ["leaf.name"]


def test_a_wrong_wire_type_the_parser_accepts_is_still_refused() -> None:
    data = Probe(title="ok").SerializeToString() + tag(2, 0) + varint(1)
    assert Probe.FromString(data).leaf == Leaf()  # upb keeps it as an unknown field
    error = refusal(data).error
    assert error.reason == MALFORMED
    assert [v.field for v in error.violations] == ["leaf"]


def test_unknown_fields_are_dropped_not_refused() -> None:
    data = Probe(title="ok").SerializeToString() + tag(99, 2) + varint(2) + b"\x00\xff"
    assert check(data) == Probe(title="ok")


def test_the_parser_refusing_what_no_field_explains_names_the_whole_request() -> None:
    error = refusal(b"\x80").error
    assert [v.field for v in error.violations] == [WHOLE_REQUEST]


# -- property: whenever the parser refuses bytes, the walk names a field ------------------------

SAMPLE = Probe(
    title="title",
    leaf=Leaf(name="leaf", tags=["x", "y"], count=5),
    leaves=[Leaf(name="one"), Leaf(name="two", blob=b"\x01")],
    labels={"env": "prod"},
    leaves_by_name={"w": Leaf(name="w")},
    by_number={3: "three"},
    nickname=wrappers_pb2.StringValue(value="nick"),
    numbers=[1, 300, 70000],
    code=9,
    ratio=1.5,
    child=Probe(text="inner"),
).SerializeToString()


@settings(max_examples=400, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=len(SAMPLE)),
    position=st.integers(min_value=0, max_value=len(SAMPLE) - 1),
    byte=st.integers(min_value=0, max_value=255),
    mode=st.sampled_from(["cut", "flip", "insert"]),
)
def test_every_byte_string_the_parser_refuses_is_refused_by_the_walk(
    cut: int, position: int, byte: int, mode: str
) -> None:
    if mode == "cut":
        data = SAMPLE[:cut]
    elif mode == "flip":
        data = SAMPLE[:position] + bytes([byte]) + SAMPLE[position + 1 :]
    else:
        data = SAMPLE[:position] + bytes([byte]) + SAMPLE[position:]
    try:
        Probe.FromString(data)
    except DecodeError:
        assert encoding_violation(PROBE, data) is not None
        return
    result = check(data)
    if isinstance(result, RefusedRequest):
        # Accepted by the parser, refused by the edge: a wrong wire type, or a NUL in text.
        assert result.error.reason in {MALFORMED, NUL_IN_TEXT}
        assert all(v.field != WHOLE_REQUEST for v in result.error.violations)
