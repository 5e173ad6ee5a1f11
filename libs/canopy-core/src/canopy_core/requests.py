"""Request ids for non-idempotent mutations (AIP-155): a retry with the same id gets the first
answer and changes nothing. The answer is stored in the mutation's own transaction."""

from __future__ import annotations

import hashlib
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message

from canopy_core.errors import InvalidArgument

M = TypeVar("M", bound=Message)

MAX_REQUEST_ID_LENGTH = 128


def request_digest(request: Message) -> bytes:
    """A digest of the request, to tell a true retry from a reused id."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


async def replay(
    conn: asyncpg.Connection,
    method: str,
    request_id: str,
    principal: str,
    request: Message,
    response_type: type[M],
) -> M | None:
    """The stored answer to an earlier call with this request id, or None for a first call.

    Call it first in the mutation's transaction: it locks the id until commit, so two
    concurrent calls with one id run one after the other.
    """
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument.field("request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters")
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))", f"{method}:{principal}:{request_id}"
    )
    row = await conn.fetchrow(
        "SELECT request_digest, response FROM request_ids "
        "WHERE method = $1 AND request_id = $2 AND principal = $3",
        method,
        request_id,
        principal,
    )
    if row is None:
        return None
    if bytes(row["request_digest"]) != request_digest(request):
        raise InvalidArgument.field(
            "request_id",
            "was already used for a different request; use a new id",
            reason="REQUEST_ID_REUSED",
        )
    response = response_type()
    response.ParseFromString(bytes(row["response"]))
    return response


async def remember(
    conn: asyncpg.Connection,
    method: str,
    request_id: str,
    principal: str,
    request: Message,
    response: Message,
) -> None:
    """Store the answer to a first call, in the same transaction as its effects."""
    await conn.execute(
        "INSERT INTO request_ids (method, request_id, principal, request_digest, response) "
        "VALUES ($1, $2, $3, $4, $5)",
        method,
        request_id,
        principal,
        request_digest(request),
        response.SerializeToString(),
    )
