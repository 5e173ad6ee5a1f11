"""Page tokens: sealed with the server's keys, bound to one list and its arguments, and opened
only into the position shape that list declared. Every failure is INVALID_ARGUMENT on
`page_token`; nothing else ever escapes `open`."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from canopy_core.errors import InvalidArgument
from canopy_core.pagination import (
    PagePosition,
    PageTokens,
    derive_key,
    page_size,
    page_token_secrets,
    page_tokens_for,
)
from canopy_core.settings import ServiceSettings

KEY_A = "a" * 32
KEY_B = "b" * 40
BY_ID = PagePosition("things", (str,))
SCHEMAS = PagePosition("schemas", (int, str))
PAIRS = PagePosition("pairs", (str, str))
ARGS = {"workspace_id": "w_ops"}


def refused(tokens: PageTokens, token: str, position: PagePosition = BY_ID) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        tokens.open(token, position, ARGS)
    assert [v.field for v in caught.value.violations] == ["page_token"]
    return caught.value


def test_a_sealed_position_opens_to_the_same_values() -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    assert tokens.open(tokens.seal(BY_ID, ["c_01"], ARGS), BY_ID, ARGS) == ("c_01",)
    token = tokens.seal(SCHEMAS, [42, "web"], ARGS)
    assert tokens.open(token, SCHEMAS, ARGS) == (42, "web")


def test_an_empty_token_is_the_first_page() -> None:
    assert PageTokens.from_secrets([KEY_A]).open("", BY_ID, ARGS) is None


def test_a_token_reveals_nothing_of_its_position_or_arguments() -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    token = tokens.seal(BY_ID, ["c_secretive"], {"integration_id": "i_hidden"})
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"c_secretive" not in raw
    assert b"i_hidden" not in raw
    # Two tokens for the same position differ (a fresh nonce each time).
    assert tokens.seal(BY_ID, ["c_1"], ARGS) != tokens.seal(BY_ID, ["c_1"], ARGS)


def test_the_old_unkeyed_tokens_are_refused() -> None:
    # What the service used to issue: base64 JSON with an unkeyed fingerprint.
    forged = base64.urlsafe_b64encode(json.dumps({"a": "c_1", "f": "0" * 16}).encode()).decode()
    error = refused(PageTokens.from_secrets([KEY_A]), forged.rstrip("="))
    assert error.reason == "PAGE_TOKEN_INVALID"


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "not-a-token",
        "AAAA",
        "=",
        "a" * 3000,
        "é" * 40,
        "ab\x00cd",
        "\x00",
        " " * 10,
        "AQ",  # the version byte alone
        base64.urlsafe_b64encode(b"\x01" + b"\x00" * 40).decode().rstrip("="),
        base64.urlsafe_b64encode(b"\x02" + bytes(range(7, 67)))
        .decode()
        .rstrip("="),  # unknown version
    ],
)
def test_garbage_of_any_shape_is_invalid_argument_on_page_token(token: str) -> None:
    error = refused(PageTokens.from_secrets([KEY_A]), token)
    assert error.reason == "PAGE_TOKEN_INVALID"


def test_a_token_with_any_byte_changed_is_refused() -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    token = tokens.seal(BY_ID, ["c_01"], ARGS)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x01
        tampered = base64.urlsafe_b64encode(bytes(changed)).decode().rstrip("=")
        assert refused(tokens, tampered).reason == "PAGE_TOKEN_INVALID"


def test_a_truncated_or_extended_token_is_refused() -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    token = tokens.seal(BY_ID, ["c_01"], ARGS)
    for cut in (1, 2, 5, len(token) // 2, len(token) - 1):
        refused(tokens, token[:cut])
    refused(tokens, token + "A")
    refused(tokens, token + "\n")
    refused(tokens, token + "=")
    refused(tokens, token + "\x00")
    refused(tokens, token + "AAAA")


def test_a_token_sealed_with_another_key_is_refused() -> None:
    other = PageTokens.from_secrets([KEY_B]).seal(BY_ID, ["c_01"], ARGS)
    assert refused(PageTokens.from_secrets([KEY_A]), other).reason == "PAGE_TOKEN_INVALID"


def test_rotation_the_first_key_seals_and_every_key_opens() -> None:
    old = PageTokens.from_secrets([KEY_A])
    in_flight = old.seal(BY_ID, ["c_01"], ARGS)
    # Step 1: every replica learns the new key, still sealing with the old one.
    learning = PageTokens.from_secrets([KEY_A, KEY_B])
    assert learning.open(in_flight, BY_ID, ARGS) == ("c_01",)
    assert old.open(learning.seal(BY_ID, ["c_02"], ARGS), BY_ID, ARGS) == ("c_02",)
    # Step 2: the new key seals; pages sealed under the old key still open.
    rotated = PageTokens.from_secrets([KEY_B, KEY_A])
    assert rotated.open(in_flight, BY_ID, ARGS) == ("c_01",)
    fresh = rotated.seal(BY_ID, ["c_03"], ARGS)
    assert learning.open(fresh, BY_ID, ARGS) == ("c_03",)
    # Step 3: the old key is dropped; what it sealed is refused.
    done = PageTokens.from_secrets([KEY_B])
    assert done.open(fresh, BY_ID, ARGS) == ("c_03",)
    refused(done, in_flight)


def test_changing_the_list_arguments_between_pages_is_a_mismatch() -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    token = tokens.seal(BY_ID, ["c_01"], {"integration_id": "i_a", "folder_id": None})
    with pytest.raises(InvalidArgument) as caught:
        tokens.open(token, BY_ID, {"integration_id": "i_b", "folder_id": None})
    assert caught.value.reason == "PAGE_TOKEN_MISMATCH"
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_a_token_of_another_list_with_the_same_arguments_is_a_mismatch() -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    available = tokens.seal(PAIRS, ["web", "c_01"], ARGS)
    with pytest.raises(InvalidArgument) as caught:
        tokens.open(available, SCHEMAS, ARGS)
    assert caught.value.reason == "PAGE_TOKEN_MISMATCH"


@pytest.mark.parametrize(
    ("position", "values"),
    [
        (SCHEMAS, 7),
        (SCHEMAS, None),
        (SCHEMAS, {"revision": 7, "name": "web"}),
        (SCHEMAS, "7"),
        (SCHEMAS, []),
        (SCHEMAS, [7]),
        (SCHEMAS, [7, "web", "extra"]),
        (SCHEMAS, ["7", "web"]),
        (SCHEMAS, [7.0, "web"]),
        (SCHEMAS, [True, "web"]),
        (SCHEMAS, [7, 8]),
        (SCHEMAS, [7, None]),
        (SCHEMAS, [7, ["web"]]),
        (SCHEMAS, [1 << 63, "web"]),
        (SCHEMAS, [-(1 << 63) - 1, "web"]),
        (SCHEMAS, [10**40, "web"]),
        (SCHEMAS, [7, "w\x00eb"]),
        (SCHEMAS, [7, "\ud800"]),
        (SCHEMAS, [7, "x" * 1025]),
        (PAIRS, [1, 2]),
        (PAIRS, ["web", 2]),
        (PAIRS, [None, None]),
        (PAIRS, ["web"]),
        (PAIRS, "web"),
        (BY_ID, 17),
        (BY_ID, [17]),
        (BY_ID, ["c_\x00"]),
        (BY_ID, [{"id": "c_1"}]),
        (BY_ID, [[]]),
    ],
)
def test_a_correctly_sealed_position_of_the_wrong_shape_is_refused(
    position: PagePosition, values: Any
) -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    # seal() writes whatever it is given; open() is what checks.
    token = tokens.seal(position, values, ARGS)
    error = refused(tokens, token, position)
    assert error.reason == "PAGE_TOKEN_INVALID"


def test_the_largest_and_smallest_int64_positions_open() -> None:
    tokens = PageTokens.from_secrets([KEY_A])
    for revision in ((1 << 63) - 1, -(1 << 63), 0):
        assert tokens.open(tokens.seal(SCHEMAS, [revision, ""], ARGS), SCHEMAS, ARGS) == (
            revision,
            "",
        )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"p": ["c_1"]}',
        b'{"p": ["c_1"], "f": 5}',
        b"[" * 100_000,
        b'{"p": [1e999], "f": "x"}',
        b'{"p": [' + b"9" * 5000 + b'], "f": "x"}',
    ],
)
def test_a_body_sealed_with_the_key_but_not_of_this_module_is_refused(body: bytes) -> None:
    # What a holder of the key (a bug of ours, a leaked key) could seal by hand.
    nonce = os.urandom(12)
    sealed = b"\x01" + nonce + AESGCM(derive_key(KEY_A)).encrypt(nonce, body, b"\x01")
    token = base64.urlsafe_b64encode(sealed).decode().rstrip("=")
    refused(PageTokens.from_secrets([KEY_A]), token)


def test_configured_keys_are_split_on_commas_first_one_first() -> None:
    settings = ServiceSettings(page_token_keys=f" {KEY_B} , {KEY_A},")
    assert page_token_secrets(settings) == [KEY_B, KEY_A]


@pytest.mark.parametrize("value", ["short", f"{KEY_A},short", ",", " "])
def test_a_key_shorter_than_32_characters_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="page_token_keys"):
        ServiceSettings(page_token_keys=value)


def test_unset_keys_derive_from_the_jwt_secret_so_replicas_sharing_it_agree(
    tmp_path: Path,
) -> None:
    secret = "s" * 40
    one = page_tokens_for(ServiceSettings(jwt_secret=secret, data_dir=tmp_path / "one"))
    two = page_tokens_for(ServiceSettings(jwt_secret=secret, data_dir=tmp_path / "two"))
    assert two.open(one.seal(BY_ID, ["c_01"], ARGS), BY_ID, ARGS) == ("c_01",)
    # ...and the key is not the JWT secret itself.
    assert derive_key(secret) != secret.encode()[:32]


def test_unset_keys_without_any_jwt_setting_use_the_development_secret(tmp_path: Path) -> None:
    # `make run`: the three services share the data directory's development secret.
    one = page_tokens_for(ServiceSettings(data_dir=tmp_path))
    two = page_tokens_for(ServiceSettings(data_dir=tmp_path))
    assert two.open(one.seal(BY_ID, ["c_01"], ARGS), BY_ID, ARGS) == ("c_01",)
    assert (tmp_path / "jwt-secret").exists()


def test_unset_keys_with_only_a_public_key_refuse_to_start(tmp_path: Path) -> None:
    settings = ServiceSettings(jwt_public_key="-----BEGIN PUBLIC KEY-----", data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="CANOPY_PAGE_TOKEN_KEYS"):
        page_tokens_for(settings)
    configured = ServiceSettings(
        jwt_public_key="-----BEGIN PUBLIC KEY-----", page_token_keys=KEY_A, data_dir=tmp_path
    )
    assert page_tokens_for(configured).open("", BY_ID, ARGS) is None


def test_page_size_defaults_caps_and_refuses_negatives() -> None:
    assert (page_size(0), page_size(7), page_size(1000)) == (25, 7, 100)
    with pytest.raises(InvalidArgument):
        page_size(-1)
