"""`canopy folders …`, `canopy connections …`, grantees at creation and the connection settings
options, against the real services: what each changes, and each bad value refused in one line
naming the option (exit 2, before any call) or the field (exit 1, the service's answer)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli.conftest import Cli
from tests.cli.test_cli import first_sync, ok, one_line_error, projected, schema_listed
from tests.cli.test_previews import attached_to_w_ops2
from tests.discovery.conftest import DISCOVERY_ROLE, EXTERNAL_ID, Org

pytestmark = pytest.mark.timeout(90)

CREATE = (
    "integrations", "create", "--tenant", "t_acme", "--handle", "aws-prod",
    "--role-arn", DISCOVERY_ROLE, "--external-id", EXTERNAL_ID, "--member-role", "m",
)  # fmt: skip


def usage_error(result: Any, option: str) -> str:
    """The usage error (exit 2) of a bad option value, which names the option."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert option in result.stderr, result.stderr
    return str(result.stderr)


def rows(shown: str) -> list[str]:
    """The lines printed, each with its runs of spaces made one (the grid pads its columns)."""
    return [" ".join(line.split()) for line in shown.splitlines()]


async def tree_of(cli: Cli, integration_id: str) -> dict[str, Any]:
    tree: dict[str, Any] = json.loads(ok(await cli.run("tree", integration_id, "-o", "json")))
    return tree


async def web_prod(cli: Cli, integration_id: str) -> str:
    tree = await tree_of(cli, integration_id)
    return str(next(c["id"] for c in tree["root"]["connections"] if c["handle"] == "web_prod"))


async def test_a_connection_handle_is_previewed_confirmed_and_returned_to_dynamic(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    connection = await web_prod(cli, integration_id)
    dry = ok(await cli.run("connections", "update", connection, "--handle", "web", "--dry-run"))
    assert "web_prod → web" in dry
    refused = await cli.run("connections", "update", connection, "--handle", "web")
    assert refused.exit_code == 3
    assert "handle web_prod (dynamic)" in rows(ok(await cli.run("connections", "show", connection)))

    shown = ok(await cli.run("connections", "update", connection, "--handle", "web", "--yes"))
    assert "handle web (static)" in rows(shown)
    await schema_listed(cli, "web")
    back = ok(await cli.run("connections", "update", connection, "--handle", "", "--yes"))
    assert "handle web_prod (dynamic)" in rows(back)


async def test_connection_overrides_are_set_shown_and_removed(cli: Cli, org: Org) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    connection = await web_prod(cli, integration_id)
    shown = ok(
        await cli.run(
            "connections", "update", connection, "--regions", "eu-west-1,us-east-1",
            "--default-region", "eu-west-1", "--max-error-retry-attempts", "3",
            "--min-error-retry-delay", "100", "--ignore-error-codes", "AccessDenied,Throttling*",
            "--ignore-error-message", "not (yet )?enabled", "--ignore-error-message", "a,b",
            "--endpoint-url", "http://localhost:4566", "--s3-force-path-style",
        )
    )  # fmt: skip  # a reconfiguration renames nothing: made without asking
    assert "regions eu-west-1, us-east-1 (override)" in rows(shown)
    as_json = json.loads(ok(await cli.run("connections", "show", connection, "-o", "json")))
    assert as_json["configOverrides"] == {
        "regions": {"values": ["eu-west-1", "us-east-1"]},
        "defaultRegion": "eu-west-1",
        "maxErrorRetryAttempts": 3,
        "minErrorRetryDelayMs": 100,
        "ignoreErrorCodes": {"values": ["AccessDenied", "Throttling*"]},
        "ignoreErrorMessages": {"values": ["not (yet )?enabled", "a,b"]},
        "endpointUrl": "http://localhost:4566",
        "s3ForcePathStyle": True,
    }
    unset = ("--unset", "regions", "--unset", "s3-force-path-style", "--default-region", "")
    ok(await cli.run("connections", "update", connection, *unset))
    after = json.loads(ok(await cli.run("connections", "show", connection, "-o", "json")))
    assert set(after["configOverrides"]) == {
        "maxErrorRetryAttempts",
        "minErrorRetryDelayMs",
        "ignoreErrorCodes",
        "ignoreErrorMessages",
        "endpointUrl",
    }
    assert after["effectiveConfig"]["regions"] == ["*"]


async def test_bad_connection_settings_are_refused_naming_the_option_or_field(
    cli: Cli, org: Org
) -> None:
    integration_id = await attached_to_w_ops2(cli, org)
    connection = await web_prod(cli, integration_id)
    update = ("connections", "update", connection)
    usage_error(await cli.run(*update, "--max-error-retry-attempts", "0"), "--max-error-retry-attempts")  # fmt: skip
    usage_error(await cli.run(*update, "--min-error-retry-delay", "x"), "--min-error-retry-delay")
    usage_error(await cli.run(*update, "--unset", "colour"), "--unset")
    both = await cli.run(*update, "--regions", "us-east-1", "--unset", "regions")
    assert "regions is both given and unset" in usage_error(both, "--unset")
    regex = one_line_error(await cli.run(*update, "--ignore-error-message", "("))
    assert "config_overrides.ignore_error_messages[0]" in regex
    url = one_line_error(await cli.run(*update, "--endpoint-url", "ftp://x"))
    assert "config_overrides.endpoint_url" in url
    handle = one_line_error(await cli.run(*update, "--handle", "Web Prod", "--dry-run"))
    assert handle.startswith("canopy: INVALID_ARGUMENT")
    assert "connection.handle" in handle
    nothing = one_line_error(await cli.run(*update))
    assert nothing == "canopy: nothing to change: give an option (canopy connections update --help)"
    assert "(override)" not in ok(await cli.run("connections", "show", connection))


async def test_a_folder_handle_is_set_and_returned_to_dynamic(cli: Cli, org: Org) -> None:
    org.ou("Production")
    created = json.loads(ok(await cli.run(*CREATE, "-o", "json")))
    await first_sync(cli, created["id"])
    folder = (await tree_of(cli, created["id"]))["root"]["folders"][0]["folder"]["id"]
    dry = ok(await cli.run("folders", "update", folder, "--handle", "prod", "--dry-run"))
    assert "production → prod" in dry
    assert "handle production (dynamic)" in rows(ok(await cli.run("folders", "show", folder)))
    shown = ok(await cli.run("folders", "update", folder, "--handle", "prod"))
    assert "handle prod (static)" in rows(shown)
    assert "prod/  Production  static" in ok(await cli.run("tree", created["id"]))
    back = ok(await cli.run("folders", "update", folder, "--handle", ""))
    assert "handle production (dynamic)" in rows(back)
    bad = one_line_error(await cli.run("folders", "update", folder, "--handle", "Prod!"))
    assert "folder.handle" in bad
    nothing = one_line_error(await cli.run("folders", "update", folder))
    assert nothing.startswith("canopy: nothing to change: give --handle")


async def test_grantees_at_creation_are_the_root_folders_grants(cli: Cli) -> None:
    created = json.loads(
        ok(await cli.run(*CREATE, "--grantee", "o_ops", "--grantee", "w_ops1", "-o", "json"))
    )
    await projected(cli, created["rootFolderId"])
    grants = ok(await cli.run("grants", "show", created["rootFolderId"]))
    assert "org o_ops" in grants
    assert "workspace w_ops1" in grants
    assert {"org o_ops direct", "workspace w_ops1 direct"} == {
        row.rsplit(" ", 1)[0] for row in rows(grants) if row.startswith(("org ", "workspace "))
    }
    assert not [row for row in rows(grants) if row.startswith("tenant ")]


async def test_bad_grantees_at_creation_are_refused_naming_the_option_or_field(cli: Cli) -> None:
    usage_error(await cli.run(*CREATE, "--grantee", "x_1"), "--grantee")
    both = await cli.run(*CREATE, "--grantee", "o_ops", "--permissions", "all-orgs")
    assert "leave out --permissions" in usage_error(both, "--grantee")
    outside = one_line_error(await cli.run(*CREATE, "--grantee", "w_other"))
    assert outside.startswith("canopy: INVALID_ARGUMENT (GRANTEE_OUTSIDE_SCOPE)")
    assert "initial_permissions.grantees[0]" in outside
    listed = json.loads(ok(await cli.run("integrations", "list", "--tenant", "t_acme", "-o", "json")))  # fmt: skip
    assert listed.get("integrations", []) == []


async def test_the_connection_settings_of_an_integration_are_given_and_reset(cli: Cli) -> None:
    created = json.loads(
        ok(
            await cli.run(
                *CREATE, "--regions", "us-east-1", "--default-region", "us-east-1",
                "--max-error-retry-attempts", "5", "--ignore-error-codes", "AccessDenied",
                "--endpoint-url", "http://localhost:4566", "--no-s3-force-path-style", "-o", "json",
            )
        )
    )  # fmt: skip
    assert created["connectionConfig"] == {
        "regions": {"values": ["us-east-1"]},
        "defaultRegion": "us-east-1",
        "maxErrorRetryAttempts": 5,
        "ignoreErrorCodes": {"values": ["AccessDenied"]},
        "endpointUrl": "http://localhost:4566",
        "s3ForcePathStyle": False,
    }
    await first_sync(cli, created["id"])  # which changes the integration (its etag) too
    update = ("integrations", "update", created["id"])
    reset = (*update, "--unset", "endpoint-url", "--regions", "", "--min-error-retry-delay", "50")
    changed = json.loads(ok(await cli.run(*reset, "-o", "json")))
    assert changed["connectionConfig"] == {
        "defaultRegion": "us-east-1",
        "maxErrorRetryAttempts": 5,
        "minErrorRetryDelayMs": 50,
        "ignoreErrorCodes": {"values": ["AccessDenied"]},
        "s3ForcePathStyle": False,
    }
    usage_error(await cli.run(*update, "--max-error-retry-attempts", "0"), "--max-error-retry-attempts")  # fmt: skip
    url = one_line_error(await cli.run(*update, "--endpoint-url", "localhost"))
    assert "connection_config.endpoint_url" in url
