"""List pagination (AIP-158): page sizes, and opaque page tokens bound to the request.

A page token is the list's position (the key of the last item returned) sealed with AES-256-GCM
under a server key: a client can neither read one nor make one. Every list declares the shape of
its position (`PagePosition`), and opening a token checks it, so even a token sealed with the
right key holds only what that list can use. Whatever fails — another key, a changed byte, a
position of the wrong shape — is `INVALID_ARGUMENT` on `page_token`; opening never raises
anything else.

Keys come from `CANOPY_PAGE_TOKEN_KEYS` (comma-separated secrets; the first seals, all open, so
a key can be rotated without breaking the pages of lists in flight). Unset, they are derived
from the HS256 secret every replica already shares; see `page_tokens_for`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from canopy_core.auth import signing_secret
from canopy_core.errors import InvalidArgument
from canopy_core.settings import ServiceSettings, split_keys

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100

_VERSION = b"\x01"  # the token format; sealed as associated data
_NONCE_BYTES = 12
_TAG_BYTES = 16
_MAX_TOKEN_CHARS = 2048  # far above any token this module makes; refused before any work
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_MAX_TEXT = 1024  # a position's strings are ids, handles and schema names
_INT64 = range(-(1 << 63), 1 << 63)
_KEY_INFO = b"canopy page token key v1"
_NOT_ISSUED = "is not a page token this service issued; start again without a page token"


def page_size(requested: int, field: str = "page_size") -> int:
    """0 → the default, capped at the maximum; negative is an error."""
    if requested < 0:
        raise InvalidArgument.field(field, "must be zero or positive")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class PagePosition:
    """What one list's page tokens hold: the list's name, and the types of its position's
    values in order (`(str,)` for an id, `(int, str)` for a revision and a name)."""

    listing: str
    types: tuple[type[int] | type[str], ...]

    def accepts(self, values: object) -> TypeGuard[list[Any]]:
        """Whether `values` (as read back from a token) has this shape."""
        if not isinstance(values, list) or len(values) != len(self.types):
            return False
        return all(_is_value(value, kind) for value, kind in zip(values, self.types, strict=True))


def _is_value(value: object, kind: type[int] | type[str]) -> bool:
    if kind is int:
        return type(value) is int and value in _INT64  # bool is not an int here
    if type(value) is not str or len(value) > _MAX_TEXT or "\x00" in value:
        return False
    try:
        value.encode()  # a lone surrogate cannot reach PostgreSQL either
    except UnicodeEncodeError:
        return False
    return True


def _fingerprint(position: PagePosition, arguments: Mapping[str, Any]) -> str:
    encoded = json.dumps(
        {"list": position.listing, "arguments": arguments}, sort_keys=True, default=str
    ).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def derive_key(secret: str) -> bytes:
    """The AES-256 key of one configured secret (HKDF-SHA256, labelled for page tokens)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(
        secret.encode()
    )


class PageTokens:
    """Seals list positions into page tokens and opens them again.

    The first key seals; every key opens, so a new key can be introduced everywhere before it is
    used, and an old one kept until the pages it sealed are over.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("PageTokens needs at least one key")
        self._ciphers = [AESGCM(key) for key in keys]

    @classmethod
    def from_secrets(cls, secrets: Sequence[str]) -> PageTokens:
        """Tokens under keys derived from these secrets, the first sealing."""
        return cls([derive_key(secret) for secret in secrets])

    def seal(
        self, position: PagePosition, values: Sequence[Any], arguments: Mapping[str, Any]
    ) -> str:
        """The opaque token for the page after `values`, for this list and these arguments."""
        body = json.dumps(
            {"p": values, "f": _fingerprint(position, arguments)}, separators=(",", ":")
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = _VERSION + nonce + self._ciphers[0].encrypt(nonce, body, _VERSION)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(
        self,
        token: str,
        position: PagePosition,
        arguments: Mapping[str, Any],
        field: str = "page_token",
    ) -> tuple[Any, ...] | None:
        """The position a token names (values in the declared types); None for the first page.

        Raises only `InvalidArgument` naming `field`: `PAGE_TOKEN_MISMATCH` for a token of
        another list or other arguments, `PAGE_TOKEN_INVALID` for anything else.
        """
        if not token:
            return None
        body = self._unseal(token)
        if body is None:
            raise InvalidArgument.field(field, _NOT_ISSUED, reason="PAGE_TOKEN_INVALID")
        values, fingerprint = body
        if fingerprint != _fingerprint(position, arguments):
            raise InvalidArgument.field(
                field,
                "was issued for another list or other list arguments; "
                "start again without a page token",
                reason="PAGE_TOKEN_MISMATCH",
            )
        if not position.accepts(values):
            raise InvalidArgument.field(field, _NOT_ISSUED, reason="PAGE_TOKEN_INVALID")
        return tuple(values)

    def _unseal(self, token: str) -> tuple[object, str] | None:
        """The body of a token sealed by one of the keys, or None."""
        if len(token) > _MAX_TOKEN_CHARS or not _TOKEN_ALPHABET.fullmatch(token):
            return None
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(sealed) < 1 + _NONCE_BYTES + _TAG_BYTES or sealed[:1] != _VERSION:
            return None
        nonce, ciphertext = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, ciphertext, _VERSION)
            except InvalidTag:
                continue
            try:
                body = json.loads(plain)
            except (ValueError, RecursionError):
                return None
            if not isinstance(body, dict) or not isinstance(body.get("f"), str):
                return None
            return body.get("p"), body["f"]
        return None


def page_token_secrets(settings: ServiceSettings) -> list[str]:
    """The secrets page-token keys are derived from, the sealing one first.

    `CANOPY_PAGE_TOKEN_KEYS` when set. Otherwise the HS256 signing secret (`CANOPY_JWT_SECRET`,
    or the development secret under the data directory): every replica holds it already, and
    whoever holds it can mint system tokens, so page tokens are no weaker for sharing it. With
    only a public key configured there is no shared secret, and a key of this process alone
    would break every page a client continues on another replica: that is refused.
    """
    if settings.page_token_keys is not None:
        return split_keys(settings.page_token_keys.get_secret_value())
    secret = signing_secret(settings)
    if secret is None:
        raise RuntimeError(
            "set CANOPY_PAGE_TOKEN_KEYS: with only CANOPY_JWT_PUBLIC_KEY there is no shared "
            "secret to derive page-token keys from, and every replica must hold the same keys"
        )
    return [secret]


def page_tokens_for(settings: ServiceSettings) -> PageTokens:
    """The page tokens a service seals and opens, from its settings."""
    secrets = page_token_secrets(settings)
    source = "CANOPY_PAGE_TOKEN_KEYS" if settings.page_token_keys else "the JWT signing secret"
    log.info("page token keys", extra={"source": source, "keys": len(secrets)})
    return PageTokens.from_secrets(secrets)
