"""Errors of the discovery service."""

from __future__ import annotations

from canopy_core.errors import CanopyError, FailedPrecondition


class DiscoveryError(CanopyError):
    """Root of the discovery service's own errors."""


class PlanNotEligible(DiscoveryError, FailedPrecondition):
    """The integration's scope is on a plan that no longer allows it: it is not synced."""

    reason = "PLAN_NOT_ELIGIBLE"

    def __init__(self, integration_id: str, message: str) -> None:
        super().__init__(message, metadata={"integration_id": integration_id})
