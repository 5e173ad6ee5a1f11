"""An operator's walk with nothing but `buf curl` and reflection: directory, external id,
integration, its automatic first sync, the tree, sharing, a prefix change, deletion."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from tests.discovery.conftest import Org
from tests.e2e.processes import ServiceProcess, buf_curl, json_stream
from tests.e2e.walks import DIRECTORY, DIRECTORY_SETUP, INTEGRATIONS, OWNER, SYSTEM, new_integration


async def call(service: ServiceProcess, method: str, body: dict[str, Any], auth: str) -> Any:
    """One RPC by reflection; its JSON answer."""
    done = await asyncio.to_thread(
        buf_curl, "-H", auth, "-d", json.dumps(body), f"http://{service.address}/{method}"
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


async def test_an_operator_walks_the_guide_with_buf_curl(
    services: dict[str, ServiceProcess], org: Org
) -> None:
    integration, discovery, permissions = (
        services["integration"],
        services["discovery"],
        services["permissions"],
    )
    for method, body in DIRECTORY_SETUP:
        await call(permissions, method, body, SYSTEM)
    await call(
        permissions,
        f"{DIRECTORY}/UpsertWorkspace",
        {"workspace": {"id": "w_ops1", "org_id": "o_ops", "handle": "ops1"}},
        SYSTEM,
    )
    org.account("Web Prod", org.ou("Production"))

    external = (
        await call(
            integration, f"{INTEGRATIONS}/GenerateExternalId", {"scope": {"org_id": "o_ops"}}, OWNER
        )
    )["externalId"]
    template = await call(
        integration,
        f"{INTEGRATIONS}/RenderRoleTemplate",
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
            integration, f"{INTEGRATIONS}/CreateIntegration", new_integration(external), OWNER
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
        f"{INTEGRATIONS}/UpdateIntegration",
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
        f"http://{integration.address}/{INTEGRATIONS}/DeleteIntegration",
    )
    assert refused.returncode != 0
    assert "failed_precondition" in refused.stderr
    await call(
        integration,
        f"{INTEGRATIONS}/DeleteIntegration",
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
