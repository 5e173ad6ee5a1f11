"""Proof that the rendered files are what their readers accept.

- `aws.spc` parses with a real HCL2 parser (python-hcl2), its blocks hold only Steampipe's own
  connection arguments and the AWS plugin's documented ones (a checked-in list naming its
  source), and every value reads back as the setting it came from.
- `aws_config` is loaded by botocore itself: a session for a rendered profile, with the
  credential source satisfied as an operator would (environment variables, or a named profile in
  a credentials file), assumes the member role with the external id at the moto server's STS,
  through the fault proxy (which records the requests it forwards) — a real AssumeRole that moto
  records — and the assumed credentials then call STS as that role.

No Steampipe binary can be installed from the registries this project reaches, so Steampipe
itself does not load the files here (the README says what is and is not checked).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import botocore.session  # type: ignore[import-untyped]
import hcl2
import pytest
from botocore.exceptions import CredentialRetrievalError  # type: ignore[import-untyped]
from hypothesis import example, given, settings
from hypothesis import strategies as st
from moto.sts.models import sts_backends

from canopy.integration.v1 import integration_pb2 as ipb
from canopy.permissions.v1 import workspace_config_service_pb2 as crpc
from canopy_permissions.workspace_config import (
    DEFAULT_CREDENTIAL_SOURCE,
    ConfigSchema,
    hcl_string,
    render_spc,
)
from tests.awsfaults import FaultProxy
from tests.discovery.conftest import moto_server, moto_url  # noqa: F401
from tests.integration.conftest import account
from tests.permissions.test_sharing import Sharing, s  # noqa: F401
from tests.permissions.test_workspace_config import MEMBER_ROLE, render, shared_workspace

ARGUMENTS = json.loads(
    (Path(__file__).parent / "data" / "steampipe_aws_arguments.json").read_text()
)
STEAMPIPE_ARGUMENTS = set(ARGUMENTS["steampipe_connection_block"]["arguments"])
PLUGIN_ARGUMENTS = set(ARGUMENTS["aws_plugin"]["arguments"])
STEAMPIPE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")  # Steampipe's IsSchemaNameValid
SESSION = "canopy-w_ops1"
EXTERNAL_ID = "o_ops:abcd1234"


def hcl_literal(raw: str) -> str:
    """The value of an HCL quoted string as python-hcl2 hands it over (quotes kept, escapes
    not applied), by the HCL spec's escapes; a template sequence (`${`, `%{`) fails: Steampipe
    would evaluate it."""
    assert raw[:1] == raw[-1:] == '"', raw
    body, out, i = raw[1:-1], [], 0
    simple = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        if body[i] == "\\":
            escaped = body[i + 1]
            if escaped in simple:
                out.append(simple[escaped])
                i += 2
            elif escaped in "uU":
                width = 4 if escaped == "u" else 8
                out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
                i += 2 + width
            else:
                raise AssertionError(f"unknown escape in {raw!r}")
        elif body.startswith(("$${", "%%{"), i):
            out.append(body[i + 1 : i + 3])
            i += 3
        elif body.startswith(("${", "%{"), i):
            raise AssertionError(f"a template sequence in {raw!r}")
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def decoded(value: Any) -> Any:
    """A parsed HCL value with its string literals read."""
    if isinstance(value, str):
        return hcl_literal(value)
    if isinstance(value, list):
        return [decoded(v) for v in value]
    return value


def connection_blocks(text: str) -> dict[str, dict[str, Any]]:
    """Connection name → its arguments, as python-hcl2 parses the file (and nothing else in it:
    no other top-level block, no attribute outside a block)."""
    parsed = hcl2.loads(text)
    assert set(parsed) <= {"connection", "__comments__"}
    blocks: dict[str, dict[str, Any]] = {}
    for entry in parsed.get("connection", []):
        ((label, body),) = entry.items()
        name = hcl_literal(label)
        assert name not in blocks, f"two blocks named {name}"
        blocks[name] = {k: decoded(v) for k, v in body.items() if not k.startswith("__")}
    return blocks


async def test_the_spc_parses_and_holds_only_documented_arguments_with_the_resolved_values(
    s: Sharing,  # noqa: F811
) -> None:
    await shared_workspace(s, endpoint_url="http://127.0.0.1:4566")
    rendered = await render(s)
    blocks = connection_blocks(rendered.text("aws.spc"))
    schemas = [n for n in blocks if "__" not in n]
    aggregators = [n for n in blocks if "__" in n]
    assert sorted(schemas) == ["data", "sandbox", "web"]
    assert len(aggregators) == 4
    for name, arguments in blocks.items():
        assert STEAMPIPE_NAME.match(name)
        assert len(name) <= 63
        assert set(arguments) <= STEAMPIPE_ARGUMENTS | PLUGIN_ARGUMENTS, name
    for name in schemas:
        assert blocks[name] == {
            "plugin": "aws",
            "profile": name,
            "regions": ["us-east-1", "eu-*"],
            "default_region": "us-east-1",
            "max_error_retry_attempts": 5,
            "min_error_retry_delay": 50,
            "ignore_error_codes": ["AccessDenied"],
            "ignore_error_messages": ['^explicit "deny" \\d+ ${x}$'],
            "endpoint_url": "http://127.0.0.1:4566",
            "s3_force_path_style": True,
        }
        # Never credentials in the file: they come through the profile.
        assert not {"access_key", "secret_key", "session_token"} & set(blocks[name])
    for name in aggregators:
        assert blocks[name]["type"] == "aggregator"
        assert blocks[name]["plugin"] == "aws"
        assert set(blocks[name]) == {"type", "plugin", "connections"}
        assert set(blocks[name]["connections"]) <= set(schemas)  # explicit, existing names
    root = rendered.header.search_path[0]
    assert sorted(blocks[root]["connections"]) == sorted(schemas)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=30), max_size=3),
    st.lists(st.text(max_size=20), max_size=2),
)
@example(messages=["${", "%{ x", "a $${"], codes=["%{"])  # template openers with no "}" after
def test_any_setting_text_survives_the_parser_unchanged(
    messages: list[str], codes: list[str]
) -> None:
    config = ipb.EffectiveConnectionConfig(
        regions=["us-east-1"], ignore_error_messages=messages, ignore_error_codes=codes
    )
    schema = ConfigSchema("web", "c_web", "111111111111", "f_root", config.SerializeToString())
    blocks = connection_blocks(render_spc("w_ops1", [(schema, config)], []).decode())
    assert blocks["web"].get("ignore_error_messages", []) == messages
    assert blocks["web"].get("ignore_error_codes", []) == codes


def test_a_string_literal_the_renderer_writes_reads_back_through_the_parser() -> None:
    value = 'a "quoted" \\path\\ ${not_a_template} %{ nor_this } tab\tend\x01 caf\u00e9'
    parsed = hcl2.loads(f"x = {hcl_string(value)}\n")
    assert hcl_literal(parsed["x"]) == value


# -- the AWS config, loaded by botocore ------------------------------------------------------------


@pytest.fixture
def recording_proxy(moto_url: str) -> Iterator[FaultProxy]:  # noqa: F811
    """The fault proxy in front of moto, keeping every AssumeRole it forwards."""
    with FaultProxy(moto_url, mode="record") as running:
        yield running


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS setting from the machine: only what a test sets."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def assume(profile: str) -> tuple[str, str]:
    """What botocore does for a session of `profile`: its credential method, then the caller
    identity its credentials have at STS."""
    session = botocore.session.Session(profile=profile)
    credentials = session.get_credentials()
    assert credentials is not None
    frozen = credentials.get_frozen_credentials()
    assert frozen.access_key != "testing"  # temporary keys of the assumed role
    identity = session.create_client("sts").get_caller_identity()
    return credentials.method, identity["Arn"]


def assumed_at_moto(account_id: str) -> list[tuple[str, str, str | None]]:
    """The roles moto's STS has issued credentials for in an account."""
    backend = sts_backends[account_id]["aws"]
    return [(r.role_arn, r.session_name, r.external_id) for r in backend.assumed_roles]


def assume_role_requests(proxy: FaultProxy) -> list[dict[str, str]]:
    """The AssumeRole requests the proxy forwarded, as their parameters."""
    found = []
    for key in proxy.recordings:
        _service, operation, query = key.split(" ", 2)
        if operation == "AssumeRole":
            found.append(dict(parse_qsl(query)))
    return found


async def test_botocore_assumes_each_profiles_member_role_with_the_external_id(
    s: Sharing,  # noqa: F811
    recording_proxy: FaultProxy,
    aws_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await shared_workspace(s, endpoint_url=recording_proxy.url)
    rendered = await render(s)  # the default credential source: Environment
    config_file = aws_environment / "aws_config"
    config_file.write_bytes(rendered.files["aws_config"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # moto's test keys, as a pod would get
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for profile, number in (("web", 1), ("data", 2), ("sandbox", 3)):
        method, arn = await asyncio.to_thread(assume, profile)
        assert method == "assume-role"
        assert arn == f"arn:aws:sts::{account(number)}:assumed-role/{MEMBER_ROLE}/{SESSION}"
        assert assumed_at_moto(account(number)) == [
            (f"arn:aws:iam::{account(number)}:role/{MEMBER_ROLE}", SESSION, EXTERNAL_ID)
        ]
    requests = assume_role_requests(recording_proxy)
    assert sorted(r["RoleArn"] for r in requests) == [
        f"arn:aws:iam::{account(n)}:role/{MEMBER_ROLE}" for n in (1, 2, 3)
    ]
    assert {(r["ExternalId"], r["RoleSessionName"]) for r in requests} == {(EXTERNAL_ID, SESSION)}


async def test_botocore_assumes_the_role_from_a_named_source_profile(
    s: Sharing,  # noqa: F811
    recording_proxy: FaultProxy,
    aws_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await shared_workspace(s, endpoint_url=recording_proxy.url)
    rendered = await render(
        s, credential_source=crpc.AwsCredentialSource(source_profile="platform")
    )
    config_file = aws_environment / "aws_config"
    config_file.write_bytes(rendered.files["aws_config"])
    credentials = aws_environment / "credentials"  # the operator's own file, with the keys
    credentials.write_text(
        "[platform]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    method, arn = await asyncio.to_thread(assume, "web")
    assert method == "assume-role"
    assert arn == f"arn:aws:sts::{account(1)}:assumed-role/{MEMBER_ROLE}/{SESSION}"
    assert [(r["RoleArn"], r["ExternalId"]) for r in assume_role_requests(recording_proxy)] == [
        (f"arn:aws:iam::{account(1)}:role/{MEMBER_ROLE}", EXTERNAL_ID)
    ]


async def test_without_the_environment_credentials_botocore_cannot_assume_the_role(
    s: Sharing,  # noqa: F811
    recording_proxy: FaultProxy,
    aws_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other side of the default: `credential_source = Environment` really reads the
    environment (with no keys there, botocore fails before any request)."""
    await shared_workspace(s, endpoint_url=recording_proxy.url)
    rendered = await render(s)
    config_file = aws_environment / "aws_config"
    config_file.write_bytes(rendered.files["aws_config"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    with pytest.raises(CredentialRetrievalError, match="Environment"):
        await asyncio.to_thread(assume, "web")
    assert assume_role_requests(recording_proxy) == []
    assert DEFAULT_CREDENTIAL_SOURCE.value == "Environment"
