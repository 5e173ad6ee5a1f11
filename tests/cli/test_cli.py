"""The `canopy` command against the three real services (in this process, on PostgreSQL, with a
moto organization behind discovery), checked on what a person at the terminal sees: the
output, the one-line errors on stderr, and the exit status."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import grpc
import jwt
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from typer.testing import CliRunner, Result

from canopy.discovery.v1 import discovery_pb2 as dpb
from canopy.discovery.v1 import discovery_service_pb2 as drpc
from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import directory_service_pb2 as dirrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from canopy.type.v1 import types_pb2
from canopy_cli.main import app
from canopy_core.server import serve
from canopy_permissions.server import spec as permissions_spec
from tests.cli.conftest import Cli, cli_env
from tests.discovery.conftest import CREDENTIALS, DISCOVERY_ROLE, EXTERNAL_ID, Org
from tests.helpers import JWT_SECRET, bearer, free_port, token
from tests.integration.conftest import SYSTEM

pytestmark = pytest.mark.timeout(60)

TERMINAL = {
    dpb.SYNC_RUN_STATE_SUCCEEDED,
    dpb.SYNC_RUN_STATE_FAILED,
    dpb.SYNC_RUN_STATE_NEEDS_CONFIRMATION,
    dpb.SYNC_RUN_STATE_CANCELLED,
}


def ok(result: Result) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    return result.stdout


def one_line_error(result: Result) -> str:
    """The single stderr line of a command that must have failed with status 1."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("canopy: ")
    return lines[0]


async def first_sync(cli: Cli, integration_id: str) -> dpb.SyncRun:
    """The sync that creating an integration starts, once it has ended."""
    for _ in range(300):
        listed = await cli.discovery.ListSyncRuns(
            drpc.ListSyncRunsRequest(integration_id=integration_id), metadata=SYSTEM
        )
        if listed.runs and listed.runs[-1].state in TERMINAL:
            run: dpb.SyncRun = listed.runs[-1]
            return run
        await asyncio.sleep(0.1)
    raise AssertionError("the first sync never ended")


async def projected(cli: Cli, folder_id: str) -> None:
    """Wait until the permissions service has learnt a folder from the tree log."""
    for _ in range(200):
        try:
            await cli.permissions.GetPermissions(
                prpc.GetPermissionsRequest(folder_id=folder_id), metadata=SYSTEM
            )
            return
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            await asyncio.sleep(0.05)
    raise AssertionError(f"{folder_id} was never projected")


async def test_the_product_guide_from_create_to_delete(cli: Cli, org: Org, tmp_path: Path) -> None:
    production = org.ou("Production")
    web = org.account("Web Prod", production)
    org.account("Dev Alice", org.ou("Sandbox"))

    created = json.loads(
        ok(
            await cli.run(
                "integrations", "create", "--tenant", "t_acme", "--handle", "aws-prod",
                "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
                "--member-role", "canopy-member", "--prefix", "aws_",
                "--regions", "us-east-1,eu-west-1", "--output", "json",
            )
        )
    )  # fmt: skip
    integration_id, root = created["id"], created["rootFolderId"]
    assert created["state"] == "INTEGRATION_STATE_PENDING"
    assert created["connectionConfig"]["regions"]["values"] == ["us-east-1", "eu-west-1"]

    listed = ok(await cli.run("integrations", "list", "--tenant", "t_acme"))
    assert "ID" in listed
    assert "HANDLE" in listed
    assert integration_id in listed
    assert "aws-prod" in listed
    assert "tenant t_acme" in listed
    as_json = json.loads(
        ok(await cli.run("integrations", "list", "--tenant", "t_acme", "-o", "json"))
    )
    assert [i["handle"] for i in as_json["integrations"]] == ["aws-prod"]

    shown = ok(await cli.run("integrations", "show", integration_id))
    assert "us-east-1, eu-west-1" in shown
    assert "canopy-member" in shown
    assert EXTERNAL_ID in shown

    await first_sync(cli, integration_id)
    synced = ok(await cli.run("sync", integration_id, "--wait"))
    assert "accounts" in synced
    assert "API calls" in synced
    assert "OUs" in synced
    assert "SUCCEEDED" in synced
    assert synced.index("API calls") < synced.rindex("SUCCEEDED")  # the progress, then the outcome

    drawn = ok(await cli.run("tree", integration_id))
    assert "production/  Production" in drawn
    assert "sandbox/  Sandbox" in drawn
    assert f"aws_web_prod  {web}  Web Prod" in drawn
    assert "aws_dev_alice" in drawn

    ok(await cli.run("integrations", "update", integration_id, "--prefix", "prod_"))
    renamed = ok(await cli.run("tree", integration_id))
    assert f"prod_web_prod  {web}  Web Prod" in renamed
    assert "aws_web_prod" not in renamed
    tree_json = json.loads(ok(await cli.run("tree", integration_id, "-o", "json")))
    assert tree_json["root"]["folder"]["id"] == root

    await projected(cli, root)
    granted = ok(await cli.run("grants", "set", root, "--grantee", "o_ops", "--grantee", "w_ops2"))
    assert "org o_ops" in granted
    assert "workspace w_ops2" in granted
    assert "direct" in granted
    connection = next(
        c["id"]
        for folder in tree_json["root"]["folders"]
        for c in folder.get("connections", [])
        if c["accountId"] == web
    )
    inherited = ok(await cli.run("grants", "show", connection))
    assert f"from {root}" in inherited
    assert "org o_ops" in inherited

    attached = ok(await cli.run("attach", "w_ops1", root))
    assert attached.startswith(f"attached {root} to w_ops1 (a_")
    schemas = ok(await cli.run("schemas", "list", "w_ops1"))
    assert "prod_web_prod" in schemas
    assert "prod_dev_alice" in schemas
    assert f"via {root}" in schemas
    assert "revision" in schemas
    schemas_json = json.loads(ok(await cli.run("schemas", "list", "w_ops1", "-o", "json")))
    assert {"prod_web_prod", "prod_dev_alice"} <= {s["name"] for s in schemas_json["schemas"]}

    assert ok(await cli.run("detach", "w_ops1", root)) == f"detached {root} from w_ops1\n"
    assert "prod_web_prod" not in ok(await cli.run("schemas", "list", "w_ops1"))

    template = ok(await cli.run("template", "discovery", "--integration-id", integration_id))
    assert "AWSTemplateFormatVersion" in template
    assert EXTERNAL_ID in template
    out = tmp_path / "member.yaml"
    ok(await cli.run("template", "member", "--role-name", "m", "--external-id", EXTERNAL_ID, "--out", str(out)))  # fmt: skip
    assert EXTERNAL_ID in out.read_text()

    access = ok(await cli.run("test-access", "--integration-id", integration_id))
    assert access.startswith(f"ok: organization {org.id}")
    before = ok(
        await cli.run("test-access", "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID)
    )
    assert before.startswith(f"ok: organization {org.id}")

    refused = await cli.run("integrations", "delete", integration_id, "--confirm", "aws-dev")
    assert "nothing deleted" in one_line_error(refused)
    ok(await cli.run("integrations", "show", integration_id))
    asked = await cli.run("integrations", "delete", integration_id, input="aws-prod\n")
    assert f"deleted aws-prod ({integration_id})" in ok(asked)
    gone = one_line_error(await cli.run("integrations", "show", integration_id))
    assert gone.startswith("canopy: NOT_FOUND (INTEGRATION_NOT_FOUND)")


async def test_live_updates_from_the_template_to_a_followed_queue_and_back(
    cli: Cli, org: Org, moto_url: str
) -> None:
    template = ok(
        await cli.run(
            "template", "discovery", "--role-name", "canopy-discovery",
            "--external-id", EXTERNAL_ID, "--event-queue",
        )
    )  # fmt: skip
    assert "AWS::Events::Rule" in template
    assert "QueueUrl" in template
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1", **CREDENTIALS)
    dead_letter = sqs.create_queue(QueueName="events-dlq")["QueueUrl"]
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": 5})
    sqs.create_queue(QueueName="events", Attributes={"RedrivePolicy": redrive})
    url = f"https://sqs.us-east-1.amazonaws.com/{org.management_account_id}/events"

    created = json.loads(
        ok(
            await cli.run(
                "integrations", "create", "--tenant", "t_acme", "--handle", "aws-live",
                "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
                "--member-role", "canopy-member", "--output", "json",
                "--event-queue", f"arn:aws:sqs:us-east-1:{org.management_account_id}:events",
            )
        )
    )  # fmt: skip
    assert created["discoveryAccess"]["eventQueue"] == url
    assert created["eventQueueStatus"]["state"] == "EVENT_QUEUE_STATE_PENDING"
    assert created["syncInterval"] == "86400s"
    shown = ok(await cli.run("integrations", "show", created["id"]))
    assert url in shown
    assert "PENDING" in shown
    assert "24h" in shown

    access = ok(await cli.run("test-access", "--integration-id", created["id"]))
    assert access.startswith(f"ok: organization {org.id}")
    assert f"event queue ok: {url} (dead-letter queue {dead_letter_arn} after 5 receives)" in access
    before = ok(
        await cli.run(
            "test-access", "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
            "--event-queue", url,
        )
    )  # fmt: skip
    assert f"event queue ok: {url}" in before

    sqs.delete_queue(QueueUrl=url)
    failed = await cli.run("test-access", "--integration-id", created["id"])
    assert failed.exit_code == 1
    assert failed.stdout.startswith("not ok: EVENT_QUEUE: the discovery role works")
    assert "event queue not ok: EVENT_QUEUE_NOT_FOUND" in failed.stdout

    ok(await cli.run("integrations", "update", created["id"], "--event-queue", ""))
    cleared = ok(await cli.run("integrations", "show", created["id"]))
    assert "(none: syncs on the schedule only)" in cleared
    assert "NOT_CONFIGURED" in cleared
    assert "15m" in cleared


async def test_a_refused_call_is_one_line_with_code_reason_and_field(cli: Cli) -> None:
    result = await cli.run(
        "integrations", "create", "--tenant", "t_acme", "--handle", "Not A Handle",
        "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID, "--member-role", "m",
    )  # fmt: skip
    line = one_line_error(result)
    assert line.startswith("canopy: INVALID_ARGUMENT (")
    assert "integration.handle" in line


async def test_a_permissions_mode_the_scope_does_not_allow_names_the_mode(cli: Cli) -> None:
    result = await cli.run(
        "integrations", "create", "--tenant", "t_acme", "--handle", "aws-prod",
        "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID, "--member-role", "m",
        "--permissions", "all-workspaces",
    )  # fmt: skip
    line = one_line_error(result)
    assert line.startswith("canopy: INVALID_ARGUMENT (")
    assert "initial_permissions.mode" in line


async def test_a_token_without_the_role_is_permission_denied_in_one_line(cli: Cli) -> None:
    outsider = token("eve", t_other="owner")
    result = await cli.run("--token", outsider, "integrations", "list", "--tenant", "t_acme")
    assert one_line_error(result).startswith("canopy: PERMISSION_DENIED (PERMISSION_DENIED)")


async def test_a_token_signed_with_another_secret_says_where_it_came_from(cli: Cli) -> None:
    other = {"CANOPY_JWT_SECRET": "another-secret-0123456789abcdef0123456789"}
    line = one_line_error(await cli.run("tree", "i_x", env=other))
    assert line.startswith("canopy: UNAUTHENTICATED (TOKEN_SIGNATURE_INVALID)")
    assert line.endswith(
        "(canopy signed its token with CANOPY_JWT_SECRET; set CANOPY_TOKEN to use another)"
    )


async def test_without_token_or_secret_canopy_says_how_to_get_one(tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "CANOPY_JWT_SECRET": None}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["tree", "i_x"], env=env)
    assert one_line_error(result).startswith("canopy: no token: set CANOPY_TOKEN")
    assert not (tmp_path / "cli").exists()  # no development secret made up on the spot


async def test_deleting_with_the_wrong_handle_typed_deletes_nothing(cli: Cli) -> None:
    created = json.loads(
        ok(
            await cli.run(
                "integrations", "create", "--org", "o_ops", "--handle", "aws-ops",
                "--role-arn", DISCOVERY_ROLE, "--external-id", "o_ops:abcd1234",
                "--member-role", "m", "-o", "json",
            )
        )
    )  # fmt: skip
    result = await cli.run("integrations", "delete", created["id"], input="aws-prod\n")
    assert "aws-ops" in result.stdout  # the prompt names the handle to type
    assert "nothing deleted" in one_line_error(result)
    await cli.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=created["id"]), metadata=SYSTEM
    )


async def test_an_unreachable_service_is_named_in_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["--integration", address, "tree", "i_x"], env=env
    )
    assert one_line_error(result) == (
        f"canopy: cannot reach the integration service at {address} (is it running? make run)"
    )
    watched = await asyncio.to_thread(
        CliRunner().invoke, app, ["schemas", "watch", "w_x", "--after", "0"], env=env
    )
    assert watched.exit_code == 1
    last = watched.stderr.splitlines()[-1]  # after the note on what is watched
    assert last.startswith("canopy: cannot reach the permissions service at ")


async def test_token_prints_a_jwt_signed_with_the_secret(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["token", "--subject", "alice", "--owner", "t_acme", "--member", "w_ops1", "--ttl", "60"],
        env=cli_env(tmp_path),
    )
    claims = jwt.decode(ok(result).strip(), JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["roles"] == {"t_acme": "owner", "w_ops1": "member"}
    assert claims["exp"] - claims["iat"] == 60
    system = await asyncio.to_thread(
        CliRunner().invoke, app, ["token", "--system"], env=cli_env(tmp_path)
    )
    assert jwt.decode(ok(system).strip(), JWT_SECRET, algorithms=["HS256"])["system"] is True


async def shared_with_w_ops2(cli: Cli, org: Org) -> tuple[pb.Integration, Any, int]:
    """An integration of t_acme with one account, synced and shared with every org; its owner's
    metadata, and the revision of w_ops2's schemas before anything is attached."""
    org.account("Web Prod")
    owner = bearer(token("olivia", t_acme="owner"))
    created = (
        await cli.integrations.CreateIntegration(
            rpc.CreateIntegrationRequest(
                integration=pb.Integration(
                    handle="aws-prod",
                    scope=types_pb2.Scope(tenant_id="t_acme"),
                    discovery_access=pb.AwsDiscoveryAccess(
                        role_arn=DISCOVERY_ROLE, external_id=EXTERNAL_ID
                    ),
                    member_access=pb.AwsMemberAccess(role_name="canopy-member"),
                ),
                initial_permissions=pb.RootFolderPermissions(
                    mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_ORGS
                ),
            ),
            metadata=owner,
        )
    ).integration
    await first_sync(cli, created.id)
    await projected(cli, created.root_folder_id)
    listed = await cli.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops2"), metadata=SYSTEM
    )
    return created, owner, listed.revision


async def schema_listed(cli: Cli, name: str) -> None:
    """Wait until w_ops2 lists a schema of that name (changes reach it through the tree log)."""
    for _ in range(100):
        current = await cli.schemas.ListWorkspaceSchemas(
            wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops2"), metadata=SYSTEM
        )
        if name in {s.name for s in current.schemas}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"w_ops2 never listed {name}")


async def rename_by_prefix(cli: Cli, created: pb.Integration, owner: Any) -> None:
    await cli.integrations.UpdateIntegration(
        rpc.UpdateIntegrationRequest(
            integration=pb.Integration(id=created.id, handle_prefix="prod_"),
            update_mask=FieldMask(paths=["handle_prefix"]),
        ),
        metadata=owner,
    )


def assert_watched_until_deleted(result: Result) -> None:
    """The watch printed web_prod's addition, its rename and its removal, each once, and ended
    with the workspace."""
    lines = ok(result).splitlines()
    connection = next(line for line in lines if line.startswith("+ web_prod ")).split("(")[1][:-1]
    assert connection.startswith("c_")
    assert [line for line in lines if "web_prod" in line or line.startswith("x ")] == [
        f"+ web_prod ({connection})",
        f"~ web_prod → prod_web_prod ({connection})",
        "- prod_web_prod (workspace deleted)",
        "x workspace w_ops2 deleted",
    ]


async def test_schemas_watch_prints_each_change_until_the_workspace_is_deleted(
    cli: Cli, org: Org
) -> None:
    created, owner, after = await shared_with_w_ops2(cli, org)
    watch = asyncio.create_task(cli.run("schemas", "watch", "w_ops2", "--after", str(after)))
    await cli.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops2", folder_id=created.root_folder_id),
        metadata=SYSTEM,
    )
    await rename_by_prefix(cli, created, owner)
    await schema_listed(cli, "prod_web_prod")
    await cli.directory.DeleteWorkspace(dirrpc.DeleteWorkspaceRequest(id="w_ops2"), metadata=SYSTEM)
    result = await asyncio.wait_for(watch, 20)
    assert_watched_until_deleted(result)
    assert f"after revision {after}" in result.stderr


async def test_schemas_watch_resumes_where_it_was_when_the_service_restarts(
    cli: Cli, org: Org
) -> None:
    created, owner, after = await shared_with_w_ops2(cli, org)
    watch = asyncio.create_task(cli.run("schemas", "watch", "w_ops2", "--after", str(after)))
    await cli.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops2", folder_id=created.root_folder_id),
        metadata=SYSTEM,
    )
    await asyncio.sleep(1)  # the watch has its first replies (progress every 0.3 s)
    permissions = cli.services["permissions"]
    await permissions.stop()
    # Renamed while the service is away: the workspace learns it when the service is back.
    await rename_by_prefix(cli, created, owner)
    await asyncio.sleep(1)  # the watch fails to reconnect at least once
    cli.services["permissions"] = await serve(permissions_spec(), permissions.runtime.settings)
    await schema_listed(cli, "prod_web_prod")
    await cli.directory.DeleteWorkspace(dirrpc.DeleteWorkspaceRequest(id="w_ops2"), metadata=SYSTEM)
    result = await asyncio.wait_for(watch, 30)
    assert_watched_until_deleted(result)
    assert "the permissions service went away; reconnecting after revision" in result.stderr


async def test_sync_wait_exits_1_when_the_run_needs_confirmation(cli: Cli, org: Org) -> None:
    doomed = [org.account(f"gone {i}") for i in range(4)]
    created = json.loads(
        ok(
            await cli.run(
                "integrations", "create", "--tenant", "t_acme", "--handle", "aws-prod",
                "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
                "--member-role", "m", "-o", "json",
            )
        )
    )  # fmt: skip
    await first_sync(cli, created["id"])
    for account_id in doomed:
        org.remove(account_id)

    guarded = await cli.run("sync", created["id"], "--wait")
    assert guarded.exit_code == 1
    assert "NEEDS_CONFIRMATION" in guarded.stdout
    assert "would delete 4 of 5 connections" in guarded.stdout
    assert f"canopy sync {created['id']} --confirm-deletions" in guarded.stdout
    confirmed = ok(await cli.run("sync", created["id"], "--confirm-deletions", "--wait"))
    assert "SUCCEEDED APPLIED" in confirmed
    assert "4  connections deleted" in confirmed


async def test_test_access_tries_member_roles_before_the_integration_is_created(
    cli: Cli, org: Org
) -> None:
    accounts = [org.account(f"member-{i}") for i in range(3)]
    org.suspend(accounts[0])
    sampled = ok(
        await cli.run(
            "test-access", "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
            "--members", "--member-role", "canopy-member", "--sample-size", "2",
        )
    )  # fmt: skip
    assert sampled.startswith(f"ok: organization {org.id}")
    assert f"members: 2 accounts tested in organization {org.id} (3 ACTIVE accounts)" in sampled
    rows = [line.split() for line in sampled.splitlines() if "canopy-member" in line]
    assert len(rows) == 2
    assert all(row[0] in {org.management_account_id, *accounts[1:]} for row in rows)
    assert all(row[-1] == "ok" for row in rows)

    given = await cli.run(
        "test-access", "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
        "--members", "--member-role", "canopy-member", "--tenant", "t_acme",
        "--account-id", accounts[1], "--account-id", accounts[0],
    )  # fmt: skip
    assert given.exit_code == 1
    lines = [line.strip() for line in given.stdout.splitlines()]
    assert next(line for line in lines if line.startswith(accounts[1])).endswith(" ok")
    assert "ACCOUNT_NOT_FOUND" in next(line for line in lines if line.startswith(accounts[0]))

    refused = await cli.run(
        "test-access", "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
        "--members", "--member-role", "canopy-member", "--org", "o_ops",
    )  # fmt: skip
    line = one_line_error(refused)
    assert "INVALID_ARGUMENT (EXTERNAL_ID_OWNER_MISMATCH)" in line
    assert "unsaved.discovery_access.external_id" in line

    outside = await cli.run(
        "test-access", "--role-arn", "arn:aws:iam::999999999999:role/canopy-discovery",
        "--external-id", EXTERNAL_ID, "--members", "--member-role", "canopy-member",
    )  # fmt: skip
    assert outside.exit_code == 1
    assert (
        "members not tested: the discovery role failed: ORGANIZATION_NOT_IN_USE" in outside.stdout
    )

    unused = await cli.run(
        "test-access", "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
        "--member-role", "canopy-member",
    )  # fmt: skip
    assert unused.exit_code == 2
    assert "are for --members" in unused.output


async def test_filters_and_the_management_account_are_set_and_changed_from_the_cli(
    cli: Cli, org: Org
) -> None:
    sandbox = org.ou("Sandbox")
    web = org.account("web")
    created = json.loads(
        ok(
            await cli.run(
                "integrations", "create", "--tenant", "t_acme", "--handle", "aws-prod",
                "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID,
                "--member-role", "m", "--exclude-ous", sandbox,
                "--exclude-accounts", f"{web}, 999999999999", "--exclude-management-account",
                "-o", "json",
            )
        )
    )  # fmt: skip
    assert created["filters"] == {
        "excludeOrganizationalUnitIds": [sandbox],
        "excludeAccountIds": [web, "999999999999"],
    }
    assert created["excludeManagementAccount"] is True
    await first_sync(cli, created["id"])
    shown = ok(await cli.run("integrations", "show", created["id"]))
    assert re.search(rf"excluded OUs +{sandbox}", shown)
    assert re.search(r"filter ids not found +999999999999", shown)
    assert re.search(r"management account mirrored +no", shown)

    updated = json.loads(
        ok(
            await cli.run(
                "integrations", "update", created["id"], "--include-ous", org.root_id,
                "--exclude-accounts", "", "--include-management-account", "-o", "json",
            )
        )
    )  # fmt: skip
    assert updated["filters"] == {
        "includeOrganizationalUnitIds": [org.root_id],
        "excludeOrganizationalUnitIds": [sandbox],
    }
    assert "excludeManagementAccount" not in updated  # false

    refused = one_line_error(
        await cli.run("integrations", "update", created["id"], "--exclude-ous", "ou-x,r-ab12")
    )
    assert "integration.filters.exclude_organizational_unit_ids[0]" in refused
