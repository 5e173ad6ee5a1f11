"""Errors of the integration service."""

from __future__ import annotations

from canopy_core.errors import (
    Aborted,
    AlreadyExists,
    CanopyError,
    FailedPrecondition,
)


class IntegrationError(CanopyError):
    """Root of the integration service's own errors."""


class PlanNotEligible(IntegrationError, FailedPrecondition):
    """The scope's plan does not allow integrations there."""

    reason = "PLAN_NOT_ELIGIBLE"

    def __init__(self, scope_kind: str, scope_id: str, plan: str, needs: str) -> None:
        super().__init__(
            f"{scope_kind} {scope_id!r} is on plan {plan}; {scope_kind}-scoped integrations "
            f"need {needs}",
            metadata={"scope": scope_id, "plan": plan, "required": needs},
        )


class HandleTaken(IntegrationError, AlreadyExists):
    """Another integration or connection of the tenant has this handle."""

    reason = "HANDLE_TAKEN"

    def __init__(self, kind: str, handle: str, field: str, holder: str) -> None:
        super().__init__(
            f"the tenant already has a {kind} with the handle {handle!r}",
            metadata={"handle": handle, "field": field, "holder": holder},
        )


class ConfirmationMismatch(IntegrationError, FailedPrecondition):
    """A destructive call's confirmation does not match."""

    reason = "CONFIRMATION_MISMATCH"


class GenerationMismatch(IntegrationError, Aborted):
    """A snapshot computed against an older tree generation."""

    reason = "TREE_GENERATION_MISMATCH"

    def __init__(self, integration_id: str, expected: int, current: int) -> None:
        super().__init__(
            f"the tree of {integration_id!r} is at generation {current}, not {expected}: "
            "another apply came first; crawl again",
            metadata={
                "integration_id": integration_id,
                "expected_generation": str(expected),
                "generation": str(current),
            },
        )


class NotDiscovered(IntegrationError, FailedPrecondition):
    """Discovered items cannot be created, moved or deleted by hand."""

    reason = "DISCOVERED_ITEM_IMMUTABLE"


class TrustedAccountUnknown(IntegrationError, FailedPrecondition):
    """No platform account to trust: none configured, and none derivable from discovery."""

    reason = "TRUSTED_ACCOUNT_UNKNOWN"

    def __init__(self, detail: str) -> None:
        super().__init__(
            "role templates need the platform's AWS account to trust: set "
            "CANOPY_TRUSTED_ACCOUNT_ID on the integration service, or give the discovery service "
            f"AWS credentials whose account can be read (STS GetCallerIdentity); {detail}",
            metadata={"setting": "CANOPY_TRUSTED_ACCOUNT_ID"},
        )


class UnsupportedPartition(IntegrationError, FailedPrecondition):
    """A stored role ARN is in a partition this deployment does not serve."""

    reason = "UNSUPPORTED_PARTITION"

    def __init__(self, integration_id: str, role_arn: str, partition: str) -> None:
        super().__init__(
            f"integration {integration_id!r} has the discovery role {role_arn}, outside the "
            f"partition {partition!r} this deployment serves; update its discovery_access",
            metadata={"integration_id": integration_id, "partition": partition},
        )
