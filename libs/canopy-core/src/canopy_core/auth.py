"""Bearer JWT authentication and the role model shared by every service.

A token's claims name its subject and its roles: `{"sub": "alice", "roles": {"t_acme": "owner",
"w_ops": "member"}}`, or `{"sub": "discovery", "system": true}` for service-to-service calls.
A role on a tenant holds for everything in it, a role on an org for its workspaces.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from canopy_core.errors import PermissionDenied, Unauthenticated
from canopy_core.settings import ServiceSettings

log = logging.getLogger(__name__)

_VERIFIED_CACHE_SIZE = 10_000
_ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"]


class Role(enum.IntEnum):
    """What a subject may do with a tenant, org or workspace; an owner is also a member."""

    MEMBER = 1
    OWNER = 2


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an RPC."""

    subject: str
    system: bool = False
    roles: Mapping[str, Role] = field(default_factory=dict)

    def role_on(self, *chain: str | None) -> Role | None:
        """The strongest role held on any of `chain` (tenant, org, workspace ids)."""
        if self.system:
            return Role.OWNER
        found = [self.roles[i] for i in chain if i is not None and i in self.roles]
        return max(found) if found else None

    def is_member(self, *chain: str | None) -> bool:
        """Whether the caller may read what lives under `chain`."""
        return self.role_on(*chain) is not None

    def is_owner(self, *chain: str | None) -> bool:
        """Whether the caller may change what lives under `chain`."""
        return self.role_on(*chain) == Role.OWNER

    def require_system(self) -> None:
        """Only other Canopy services (a `system` token) may call this."""
        if not self.system:
            raise PermissionDenied(
                "only Canopy services may call this (a system token is required)",
                reason="SYSTEM_ONLY",
                metadata={"subject": self.subject},
            )

    def require_member(self, *chain: str | None, resource: str) -> None:
        """Fail PERMISSION_DENIED unless the caller is a member on `chain`."""
        if not self.is_member(*chain):
            raise _denied(self, "read", resource)

    def require_owner(self, *chain: str | None, resource: str) -> None:
        """Fail PERMISSION_DENIED unless the caller is an owner on `chain`."""
        if not self.is_owner(*chain):
            raise _denied(self, "change", resource)


def _denied(principal: Principal, verb: str, resource: str) -> PermissionDenied:
    return PermissionDenied(
        f"{principal.subject!r} may not {verb} {resource}",
        metadata={"subject": principal.subject, "resource": resource},
    )


SYSTEM = Principal(subject="system", system=True)


def parse_claims(claims: Mapping[str, Any]) -> Principal:
    """Build a principal from verified claims; raises `Unauthenticated` on a bad shape."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("the token has no subject (sub)", reason="TOKEN_INVALID")
    system = claims.get("system", False)
    if not isinstance(system, bool):
        raise Unauthenticated("the token's system claim must be a boolean", reason="TOKEN_INVALID")
    raw_roles = claims.get("roles", {})
    if not isinstance(raw_roles, dict):
        raise Unauthenticated("the token's roles claim must be an object", reason="TOKEN_INVALID")
    roles: dict[str, Role] = {}
    for resource_id, role in raw_roles.items():
        try:
            roles[str(resource_id)] = Role[str(role).upper()]
        except KeyError:
            raise Unauthenticated(
                f"unknown role {role!r} for {resource_id!r}", reason="TOKEN_INVALID"
            ) from None
    return Principal(subject=subject, system=system, roles=roles)


class TokenVerifier:
    """Verifies bearer tokens with the shared HS256 secret or a public key."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self._keys: list[tuple[Any, list[str]]] = []
        if settings.jwt_public_key:
            self._keys.append((_read_key(settings.jwt_public_key), _ASYMMETRIC))
        secret = signing_secret(settings)
        if secret is not None:
            self._keys.append((secret, ["HS256"]))
        if not self._keys:
            raise RuntimeError("set CANOPY_JWT_SECRET or CANOPY_JWT_PUBLIC_KEY")
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The principal a token names; raises `Unauthenticated` with a precise reason.

        A verified token is remembered until it expires, so its signature is checked once
        rather than on every call of a busy client.
        """
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        options: Any = {"require": ["sub", "exp"], "verify_aud": self.audience is not None}
        last_error: Exception | None = None
        for key, algorithms in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    audience=self.audience,
                    issuer=self.issuer,
                    options=options,
                    leeway=5,
                )
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from None
            except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as exc:
                last_error = exc
                continue
            except jwt.InvalidTokenError as exc:
                raise Unauthenticated(f"invalid token: {exc}", reason="TOKEN_INVALID") from None
            return parse_claims(claims), float(claims["exp"])
        raise Unauthenticated(
            "the token's signature does not verify", reason="TOKEN_SIGNATURE_INVALID"
        ) from last_error


def _read_key(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text()


def signing_secret(settings: ServiceSettings) -> str | None:
    """The HS256 secret: configured, or (with no key configured at all) a development secret
    kept in the data directory, shared by every service and `canopy-token` of one checkout."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.jwt_public_key:
        return None
    return _development_secret(settings.data_dir / "jwt-secret")


def _development_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".jwt-secret.{os.getpid()}")
    temp.write_text(secrets.token_hex(32))
    temp.chmod(0o600)
    try:
        os.link(temp, path)  # atomic: exactly one concurrent starter wins
        log.warning("no CANOPY_JWT_SECRET: created a development secret", extra={"path": str(path)})
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return path.read_text().strip()


def mint_token(
    secret: str,
    subject: str,
    *,
    roles: Mapping[str, Role | str] | None = None,
    system: bool = False,
    ttl_seconds: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """A signed HS256 token for `subject` with the given roles (operators, tests, services)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(ttl_seconds)}
    if roles:
        claims["roles"] = {
            k: (v.name.lower() if isinstance(v, Role) else v) for k, v in roles.items()
        }
    if system:
        claims["system"] = True
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


class SystemCredentials:
    """The bearer token this service presents to other Canopy services, re-minted before expiry."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._token: str | None = None
        self._expires = 0.0

    def token(self) -> str:
        """A valid system token."""
        if self._settings.system_token is not None:
            return self._settings.system_token.get_secret_value()
        now = time.time()
        if self._token is None or now > self._expires - 300:
            secret = signing_secret(self._settings)
            if secret is None:
                raise RuntimeError("set CANOPY_SYSTEM_TOKEN when only a public key is configured")
            self._token = mint_token(
                secret,
                f"service:{self._settings.service_name}",
                system=True,
                ttl_seconds=3600,
                issuer=self._settings.jwt_issuer,
                audience=self._settings.jwt_audience,
            )
            self._expires = now + 3600
        return self._token
