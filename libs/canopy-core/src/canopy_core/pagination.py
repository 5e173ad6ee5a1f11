"""List pagination (AIP-158): page sizes and opaque page tokens bound to the request."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canopy_core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100


def page_size(requested: int, field: str = "page_size") -> int:
    """0 → the default, capped at the maximum; negative is an error."""
    if requested < 0:
        raise InvalidArgument.field(field, "must be zero or positive")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _fingerprint(arguments: Mapping[str, Any]) -> str:
    encoded = json.dumps(arguments, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


@dataclass(frozen=True)
class PageToken:
    """Where the next page starts (the last key returned), for one set of list arguments."""

    after: Any

    def encode(self, arguments: Mapping[str, Any]) -> str:
        """The opaque token handed to the client."""
        body = json.dumps({"a": self.after, "f": _fingerprint(arguments)}).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=")

    @staticmethod
    def decode(
        token: str, arguments: Mapping[str, Any], field: str = "page_token"
    ) -> PageToken | None:
        """The position a token names; None for the first page. Errors name `field`."""
        if not token:
            return None
        try:
            padded = token + "=" * (-len(token) % 4)
            body = json.loads(base64.urlsafe_b64decode(padded.encode()))
            after, fingerprint = body["a"], body["f"]
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument.field(field, "is not a token this service issued") from None
        if fingerprint != _fingerprint(arguments):
            raise InvalidArgument.field(
                field,
                "was issued for different list arguments; start again without a page token",
                reason="PAGE_TOKEN_MISMATCH",
            )
        return PageToken(after)
