"""An operator's walk with nothing but `buf curl` and reflection: directory, external id,
integration, its automatic first sync, the tree, sharing, a prefix change, deletion."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from tests.discovery.conftest import Org
from tests.e2e.processes import ServiceProcess, buf_curl
from tests.helpers import token

SYSTEM = f"authorization: Bearer {token('platform', system=True)}"
OWNER = f"authorization: Bearer {token('oscar', o_ops='owner')}"


async def call(service: ServiceProcess, method: str, body: dict[str, Any], auth: str) -> Any:
    """One RPC by reflection; its JSON answer."""
    done = await asyncio.to_thread(
        buf_curl, "-H", auth, "-d", json.dumps(body), f"http://{service.address}/{method}"
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def json_stream(text: str) -> list[Any]:
    """The messages of a streaming call as buf curl prints them: JSON objects one after
    another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        message, at = decoder.raw_decode(text, at)
        found.append(message)
    return found


async def test_an_operator_walks_the_guide_with_buf_curl(
    services: dict[str, ServiceProcess], org: Org
) -> None:
    integration, discovery, permissions = (
        services["integration"],
        services["discovery"],
        services["permissions"],
    )
    directory = "canopy.permissions.v1.DirectoryService"
    await call(
        permissions,
        f"{directory}/UpsertTenant",
        {"tenant": {"id": "t_acme", "handle": "acme", "plan": "PLAN_ENTERPRISE"}},
        SYSTEM,
    )
    await call(
        permissions,
        f"{directory}/UpsertOrg",
        {"org": {"id": "o_ops", "tenant_id": "t_acme", "handle": "ops", "plan": "PLAN_TEAM"}},
        SYSTEM,
    )
    await call(
        permissions,
        f"{directory}/UpsertWorkspace",
        {"workspace": {"id": "w_ops1", "org_id": "o_ops", "handle": "ops1"}},
        SYSTEM,
    )
    org.account("Web Prod", org.ou("Production"))

    ints = "canopy.integration.v1.IntegrationService"
    external = (
        await call(integration, f"{ints}/GenerateExternalId", {"scope": {"org_id": "o_ops"}}, OWNER)
    )["externalId"]
    template = await call(
        integration,
        f"{ints}/RenderRoleTemplate",
        {
            "kind": "ROLE_TEMPLATE_KIND_DISCOVERY_ROLE",
            "role_name": "canopy-discovery",
            "external_id": external,
        },
        OWNER,
    )
    assert external in template["templateYaml"]
    created = (
        await call(
            integration,
            f"{ints}/CreateIntegration",
            {
                "integration": {
                    "handle": "aws-ops",
                    "scope": {"org_id": "o_ops"},
                    "discovery_access": {
                        "role_arn": "arn:aws:iam::123456789012:role/canopy-discovery",
                        "external_id": external,
                    },
                    "member_access": {"role_name": "canopy-member"},
                },
                "initial_permissions": {"mode": "ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES"},
            },
            OWNER,
        )
    )["integration"]
    assert created["state"] == "INTEGRATION_STATE_PENDING"

    disc = "canopy.discovery.v1.DiscoveryService"
    for _ in range(100):
        runs = (
            await call(discovery, f"{disc}/ListSyncRuns", {"integration_id": created["id"]}, OWNER)
        ).get("runs", [])
        if runs and runs[0]["state"] == "SYNC_RUN_STATE_SUCCEEDED":
            break
        await asyncio.sleep(0.2)
    assert runs[0]["trigger"] == "SYNC_TRIGGER_CREATED"

    tree_service = "canopy.integration.v1.ConnectionTreeService"
    tree = (
        await call(
            integration,
            f"{tree_service}/GetConnectionTree",
            {"integration_id": created["id"]},
            OWNER,
        )
    )["tree"]
    production = tree["root"]["folders"][0]
    assert production["folder"]["handle"] == "production"
    assert production["connections"][0]["handle"] == "web_prod"

    schemas = "canopy.permissions.v1.WorkspaceSchemaService"
    for _ in range(100):
        done = await asyncio.to_thread(
            buf_curl,
            "-H",
            SYSTEM,
            "-d",
            json.dumps({"workspace_id": "w_ops1", "folder_id": created["rootFolderId"]}),
            f"http://{permissions.address}/{schemas}/AttachSchema",
        )
        if done.returncode == 0:
            break
        await asyncio.sleep(0.1)  # the permissions service is still projecting the tree
    listed = await call(
        permissions, f"{schemas}/ListWorkspaceSchemas", {"workspace_id": "w_ops1"}, SYSTEM
    )
    assert "web_prod" in [s["name"] for s in listed["schemas"]]

    # The workspace's Steampipe configuration, as the README calls it: a header, then chunks.
    config_service = "canopy.permissions.v1.WorkspaceConfigService"
    streamed = await asyncio.to_thread(
        buf_curl,
        "-H",
        SYSTEM,
        "-d",
        json.dumps(
            {
                "workspace_id": "w_ops1",
                "credential_source": {"source_profile": "platform"},
                "connection_patterns": ["web_*"],
            }
        ),
        f"http://{permissions.address}/{config_service}/RenderWorkspaceConfig",
    )
    assert streamed.returncode == 0, streamed.stderr
    messages = json_stream(streamed.stdout)
    header = messages[0]["header"]
    assert [f["path"] for f in header["files"]] == ["aws.spc", "aws_config"]
    assert header["patternMatches"] == [{"pattern": "web_*", "schemas": ["web_prod"]}]
    files: dict[str, bytes] = {}
    for message in messages[1:]:
        chunk = message["chunk"]
        files[chunk["path"]] = files.get(chunk["path"], b"") + base64.b64decode(chunk["data"])
    assert b'connection "web_prod" {' in files["aws.spc"]
    assert b"[profile web_prod]\nrole_arn = arn:aws:iam::" in files["aws_config"]
    assert [len(files[f["path"]]) for f in header["files"]] == [
        int(f["size"]) for f in header["files"]
    ]

    await call(
        integration,
        f"{ints}/UpdateIntegration",
        {
            "integration": {"id": created["id"], "handle_prefix": "aws_"},
            "update_mask": "handlePrefix",
        },
        OWNER,
    )
    for _ in range(100):
        listed = await call(
            permissions, f"{schemas}/ListWorkspaceSchemas", {"workspace_id": "w_ops1"}, SYSTEM
        )
        if "aws_web_prod" in [s["name"] for s in listed.get("schemas", [])]:
            break
        await asyncio.sleep(0.1)
    assert "aws_web_prod" in [s["name"] for s in listed["schemas"]]

    refused = await asyncio.to_thread(
        buf_curl,
        "-H",
        OWNER,
        "-d",
        json.dumps({"id": created["id"], "confirm_handle": "nope"}),
        f"http://{integration.address}/{ints}/DeleteIntegration",
    )
    assert refused.returncode != 0
    assert "failed_precondition" in refused.stderr
    await call(
        integration,
        f"{ints}/DeleteIntegration",
        {"id": created["id"], "confirm_handle": "aws-ops"},
        OWNER,
    )
    for _ in range(100):
        listed = await call(
            permissions, f"{schemas}/ListWorkspaceSchemas", {"workspace_id": "w_ops1"}, SYSTEM
        )
        if not listed.get("schemas"):
            break
        await asyncio.sleep(0.1)
    assert not listed.get("schemas")
