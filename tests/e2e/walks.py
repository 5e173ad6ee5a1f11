"""What the operators' walks with command line clients (`buf curl`, grpcurl) send: the same
tokens, directory and integration, as JSON both clients accept (proto field names)."""

from __future__ import annotations

from typing import Any

from tests.helpers import token

SYSTEM = f"authorization: Bearer {token('platform', system=True)}"
OWNER = f"authorization: Bearer {token('oscar', o_ops='owner')}"
DIRECTORY = "canopy.permissions.v1.DirectoryService"
INTEGRATIONS = "canopy.integration.v1.IntegrationService"

#: The platform's directory calls (system token): an enterprise tenant and its team org.
DIRECTORY_SETUP: list[tuple[str, dict[str, Any]]] = [
    (
        f"{DIRECTORY}/UpsertTenant",
        {"tenant": {"id": "t_acme", "handle": "acme", "plan": "PLAN_ENTERPRISE"}},
    ),
    (
        f"{DIRECTORY}/UpsertOrg",
        {"org": {"id": "o_ops", "tenant_id": "t_acme", "handle": "ops", "plan": "PLAN_TEAM"}},
    ),
]


def new_integration(external_id: str) -> dict[str, Any]:
    """A CreateIntegration request: org o_ops's AWS organization, shared with its workspaces."""
    return {
        "integration": {
            "handle": "aws-ops",
            "scope": {"org_id": "o_ops"},
            "discovery_access": {
                "role_arn": "arn:aws:iam::123456789012:role/canopy-discovery",
                "external_id": external_id,
            },
            "member_access": {"role_name": "canopy-member"},
        },
        "initial_permissions": {"mode": "ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES"},
    }
