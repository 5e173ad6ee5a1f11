"""`--dry-run` and the confirmation of changes that reach workspaces, against the real services:
a dry run prints the impact and changes nothing; a change that would remove or rename schemas is
shown and asked about at a terminal (no: nothing changes), refused without one (exit 3), and made
with `--yes`."""

from __future__ import annotations

import json

import pytest

from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.permissions.v1 import workspace_schema_service_pb2 as wrpc
from tests.cli.conftest import Cli
from tests.cli.terminal import in_terminal
from tests.cli.test_cli import ok, one_line_error, schema_listed, shared_with_w_ops2
from tests.discovery.conftest import Org
from tests.integration.conftest import SYSTEM

pytestmark = pytest.mark.timeout(90)

NO_TERMINAL = 3
BOTH = {"master", "web_prod"}


async def attached_to_w_ops2(cli: Cli, org: Org) -> str:
    """An integration (the management account, `master`, and one more, `web_prod`) shared with
    every org, its root attached to w_ops2; its id."""
    created, _owner, _after = await shared_with_w_ops2(cli, org)
    await cli.schemas.AttachSchema(
        wrpc.AttachSchemaRequest(workspace_id="w_ops2", folder_id=created.root_folder_id),
        metadata=SYSTEM,
    )
    await schema_listed(cli, "web_prod")
    return created.id


def workspace_row(shown: str, schema: str) -> list[str]:
    """The words of the workspace table's row of w_ops2 naming that schema."""
    return next(
        words
        for words in (line.split() for line in shown.splitlines())
        if words[:1] == ["w_ops2"] and schema in words
    )


async def prefix_of(cli: Cli, integration_id: str) -> str:
    reply = await cli.integrations.GetIntegration(
        rpc.GetIntegrationRequest(id=integration_id), metadata=SYSTEM
    )
    return reply.integration.handle_prefix


async def schema_names(cli: Cli) -> set[str]:
    listed = await cli.schemas.ListWorkspaceSchemas(
        wrpc.ListWorkspaceSchemasRequest(workspace_id="w_ops2"), metadata=SYSTEM
    )
    return {schema.name for schema in listed.schemas}


async def test_an_update_dry_run_prints_every_rename_and_changes_nothing(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    shown = ok(await cli.run("integrations", "update", integration_id, "--prefix", "prod_", "--dry-run"))  # fmt: skip
    assert "Tree: 2 connection(s) renamed" in shown
    assert "Workspaces: 1 affected — schemas 2 renamed" in shown
    assert "web_prod → prod_web_prod" in shown
    assert workspace_row(shown, "web_prod")[:5] == [
        "w_ops2",
        "renamed",
        "web_prod",
        "→",
        "prod_web_prod",
    ]
    assert await prefix_of(cli, integration_id) == ""
    assert await schema_names(cli) == BOTH

    update = ("integrations", "update", integration_id, "--prefix", "prod_", "--dry-run")
    as_json = json.loads(ok(await cli.run(*update, "-o", "json")))
    assert as_json["totals"]["schemasRenamed"] == "2"
    [workspace] = as_json["workspaces"]
    assert workspace["workspaceId"] == "w_ops2"
    renames = {(s["oldName"], s["name"]) for s in workspace["schemas"]}
    assert renames == {("web_prod", "prod_web_prod"), ("master", "prod_master")}


async def test_a_rename_without_a_terminal_or_yes_is_refused_and_changes_nothing(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    refused = await cli.run("integrations", "update", integration_id, "--prefix", "prod_")
    assert refused.exit_code == NO_TERMINAL, (refused.stdout, refused.stderr)
    assert "web_prod → prod_web_prod" in refused.stderr  # the impact, shown on stderr
    assert refused.stderr.splitlines()[-1].startswith("canopy: this change removes or renames")
    assert "give --yes" in refused.stderr
    assert refused.stdout == ""
    assert await prefix_of(cli, integration_id) == ""
    assert await schema_names(cli) == BOTH


async def test_declining_at_the_terminal_changes_nothing_and_accepting_makes_the_change(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    declined = await in_terminal(
        cli, "integrations", "update", integration_id, "--prefix", "prod_", answer="n"
    )
    assert declined.asked, declined.screen
    assert "web_prod → prod_web_prod" in declined.screen
    assert declined.screen.index("web_prod → prod_web_prod") < declined.screen.index("[y/N]")
    assert declined.exit_code == 1, declined.screen
    assert "canopy: not confirmed: nothing changed" in declined.screen
    assert await prefix_of(cli, integration_id) == ""
    assert await schema_names(cli) == BOTH

    accepted = await in_terminal(
        cli, "integrations", "update", integration_id, "--prefix", "prod_", answer="y"
    )
    assert accepted.asked
    assert accepted.exit_code == 0, accepted.screen
    assert await prefix_of(cli, integration_id) == "prod_"
    await schema_listed(cli, "prod_web_prod")


async def test_yes_makes_a_renaming_change_without_asking(cli: Cli, org: Org) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    shown = ok(await cli.run("integrations", "update", integration_id, "--prefix", "prod_", "--yes"))  # fmt: skip
    assert "prod_" in shown
    assert await prefix_of(cli, integration_id) == "prod_"
    await schema_listed(cli, "prod_web_prod")


async def test_a_change_that_removes_or_renames_no_schema_is_made_without_asking(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    ok(await cli.run("integrations", "update", integration_id, "--regions", "us-east-1"))
    shown = json.loads(ok(await cli.run("integrations", "show", integration_id, "-o", "json")))
    assert shown["connectionConfig"]["regions"]["values"] == ["us-east-1"]


async def test_a_delete_dry_run_lists_the_removals_and_deletes_nothing(cli: Cli, org: Org) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    shown = ok(await cli.run("integrations", "delete", integration_id, "--dry-run"))
    assert "connection(s) deleted" in shown
    assert "schemas 2 removed" in shown
    row = workspace_row(shown, "web_prod")
    assert row[:3] == ["w_ops2", "removed", "web_prod"]
    assert row[-2:] == ["integration", "deleted"]
    ok(await cli.run("integrations", "show", integration_id))
    assert await schema_names(cli) == BOTH


async def test_delete_with_confirm_asks_again_when_workspaces_lose_schemas(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    refused = await cli.run("integrations", "delete", integration_id, "--confirm", "aws-prod")
    assert refused.exit_code == NO_TERMINAL, (refused.stdout, refused.stderr)
    assert "web_prod" in refused.stderr
    ok(await cli.run("integrations", "show", integration_id))

    deleted = ok(await cli.run("integrations", "delete", integration_id, "--confirm", "aws-prod", "--yes"))  # fmt: skip
    assert deleted == f"deleted aws-prod ({integration_id})\n"
    gone = one_line_error(await cli.run("integrations", "show", integration_id))
    assert gone.startswith("canopy: NOT_FOUND")


async def test_the_typed_handle_confirms_a_delete_shown_first(cli: Cli, org: Org) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    asked = ok(await cli.run("integrations", "delete", integration_id, input="aws-prod\n"))
    assert asked.index("web_prod") < asked.index("Type its handle to confirm")
    assert f"deleted aws-prod ({integration_id})" in asked


async def test_a_sync_dry_run_shows_what_the_crawl_would_delete_and_applies_nothing(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    tree = json.loads(ok(await cli.run("tree", integration_id, "-o", "json")))
    web = next(c for c in tree["root"]["connections"] if c["handle"] == "web_prod")
    org.remove(web["accountId"])
    shown = ok(await cli.run("sync", integration_id, "--dry-run"))
    assert shown.startswith("dry run ")
    assert "1 connection(s) deleted" in shown
    row = workspace_row(shown, "web_prod")
    assert row[:3] == ["w_ops2", "removed", "web_prod"]
    assert row[-2:] == ["connection", "deleted"]
    assert await schema_names(cli) == BOTH
    run = json.loads(ok(await cli.run("sync", integration_id, "--dry-run", "-o", "json")))
    assert run["dryRun"] is True
    assert run["impact"]["totals"]["connectionsDeleted"] == "1"


async def test_clearing_grants_is_previewed_and_confirmed_like_any_change(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    shown = json.loads(ok(await cli.run("integrations", "show", integration_id, "-o", "json")))
    root = shown["rootFolderId"]
    dry = ok(await cli.run("grants", "set", root, "--clear", "--dry-run"))
    row = workspace_row(dry, "web_prod")
    assert row[:3] == ["w_ops2", "removed", "web_prod"]
    assert row[-2:] == ["access", "revoked"]
    refused = await cli.run("grants", "set", root, "--clear")
    assert refused.exit_code == NO_TERMINAL
    assert "tenant t_acme" in ok(await cli.run("grants", "show", root))
    ok(await cli.run("grants", "set", root, "--clear", "--yes"))
    assert "no grants" in ok(await cli.run("grants", "show", root))
