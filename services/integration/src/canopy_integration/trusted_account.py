"""The platform AWS account role templates trust: `CANOPY_TRUSTED_ACCOUNT_ID` when configured,
otherwise the account of the credentials discovery really uses, asked of the discovery service
(which holds them and reads their identity with STS GetCallerIdentity). Never a default: with
neither, rendering a template fails `TRUSTED_ACCOUNT_UNKNOWN`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from canopy_integration.errors import TrustedAccountUnknown

# A derived account is asked again after this long: discovery's credentials may be replaced.
DERIVED_TTL_SECONDS = 300.0


class PlatformIdentity(Protocol):
    """Who can tell the account of the platform's AWS credentials (the discovery service)."""

    async def platform_account_id(self) -> str:
        """The 12-digit account; raises TrustedAccountUnknown or Unavailable."""
        ...


class TrustedAccount:
    """The configured account, or the derived one (kept for a few minutes)."""

    def __init__(
        self,
        configured: str | None,
        platform: PlatformIdentity | None,
        *,
        ttl: float = DERIVED_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = configured
        self._platform = platform
        self._ttl = ttl
        self._clock = clock
        self._derived: tuple[str, float] | None = None

    async def account_id(self) -> str:
        """The account to trust; raises TrustedAccountUnknown when it cannot be known."""
        if self.configured:
            return self.configured
        if self._derived is not None and self._clock() < self._derived[1]:
            return self._derived[0]
        if self._platform is None:
            raise TrustedAccountUnknown("no discovery service to ask")
        account_id = await self._platform.platform_account_id()
        self._derived = (account_id, self._clock() + self._ttl)
        return account_id
