"""The renderer of a workspace's Steampipe configuration, without I/O: the plugin arguments, the
aggregators and their names, the search path, the AWS profiles, escaping, determinism, and the
request checks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canopy.integration.v1 import integration_pb2 as ipb
from canopy_core.errors import InvalidArgument
from canopy_permissions.workspace_config import (
    AGGREGATOR_PREFIX,
    DEFAULT_CREDENTIAL_SOURCE,
    ConfigSchema,
    CredentialSource,
    WorkspaceConfig,
    aggregator_name,
    check_request,
    hcl_string,
    plan_aggregators,
    plugin_arguments,
    render,
    session_name,
)

HANDLE = re.compile(r"^[a-z](?:[a-z0-9]|_(?=[a-z0-9])){0,38}\Z")  # a connection handle
STEAMPIPE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")  # Steampipe's IsSchemaNameValid


def config(account: str, **fields: object) -> ipb.EffectiveConnectionConfig:
    values: dict[str, object] = {
        "regions": ["*"],
        "max_error_retry_attempts": 9,
        "min_error_retry_delay_ms": 25,
        "role_arn": f"arn:aws:iam::{account}:role/canopy-member",
        "external_id": "o_ops:abcd1234",
    }
    values.update(fields)
    return ipb.EffectiveConnectionConfig(**values)  # type: ignore[arg-type]


def schema(name: str, folder: str, account: str = "111111111111", **fields: object) -> ConfigSchema:
    return ConfigSchema(
        name=name,
        connection_id=f"c_{name}",
        account_id=account,
        folder_id=folder,
        config=config(account, **fields).SerializeToString(),
    )


# root ── prod ── eu
#      └─ dev
PARENTS: dict[str, str | None] = {
    "f_root": None,
    "f_prod": "f_root",
    "f_eu": "f_prod",
    "f_dev": "f_root",
    "f_empty": "f_root",
}
SCHEMAS = [
    schema("web", "f_prod", "111111111111"),
    schema("data", "f_eu", "222222222222"),
    schema("sandbox", "f_dev", "333333333333"),
]


def file_text(rendered: WorkspaceConfig, path: str) -> str:
    files = {f.path: f.data for f in rendered.files}
    return files[path].decode()


def test_every_resolved_setting_maps_to_the_aws_plugins_own_argument() -> None:
    full = config(
        "111111111111",
        regions=["us-east-1", "eu-*"],
        default_region="eu-west-1",
        max_error_retry_attempts=5,
        min_error_retry_delay_ms=50,
        ignore_error_codes=["AccessDenied", "Throttl*"],
        ignore_error_messages=["^timeout.*$"],
        endpoint_url="http://localhost:4566",
        s3_force_path_style=True,
    )
    assert plugin_arguments("web", full) == [
        ("plugin", "aws"),
        ("profile", "web"),
        ("regions", ["us-east-1", "eu-*"]),
        ("default_region", "eu-west-1"),
        ("max_error_retry_attempts", 5),
        ("min_error_retry_delay", 50),
        ("ignore_error_codes", ["AccessDenied", "Throttl*"]),
        ("ignore_error_messages", ["^timeout.*$"]),
        ("endpoint_url", "http://localhost:4566"),
        ("s3_force_path_style", True),
    ]


def test_settings_without_a_value_are_left_to_the_plugin() -> None:
    bare = ipb.EffectiveConnectionConfig(role_arn="arn:aws:iam::111111111111:role/m")
    # No `regions = []` (the plugin refuses it), no empty default_region or endpoint_url.
    assert plugin_arguments("web", bare) == [
        ("plugin", "aws"),
        ("profile", "web"),
        ("s3_force_path_style", False),
    ]


def test_the_spc_holds_one_connection_block_per_schema_with_its_profile() -> None:
    rendered = render("w_ops1", 7, SCHEMAS, [], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    spc = file_text(rendered, "aws.spc")
    assert re.findall(r'^connection "(\w+)" \{$', spc, re.M) == ["data", "sandbox", "web"]
    assert '  profile                  = "web"\n' in spc
    assert '  regions                  = ["*"]\n' in spc
    assert "  min_error_retry_delay    = 25\n" in spc
    assert "# account 111111111111 (connection c_web)\n" in spc
    assert 'type        = "aggregator"' not in spc  # no folder attached
    assert "#   (no aggregator: the workspace attaches no folder)\n" in spc


def test_an_attached_folder_gets_an_aggregator_and_so_does_every_folder_below_it_with_schemas() -> (
    None
):
    found = plan_aggregators(SCHEMAS, ["f_root"], PARENTS)
    assert [(a.folder_id, a.depth, a.connections) for a in found] == [
        ("f_root", 0, ("data", "sandbox", "web")),
        ("f_dev", 1, ("sandbox",)),
        ("f_prod", 1, ("data", "web")),  # nested folders count: `eu` is below `prod`
        ("f_eu", 2, ("data",)),
    ]  # and f_empty, which holds no schema, gets none (an aggregator of nothing fails)


def test_folders_outside_every_attached_folder_get_no_aggregator() -> None:
    # `web` and `sandbox` are attached directly; only `prod` (and so `eu`) is attached as a folder.
    found = plan_aggregators(SCHEMAS, ["f_prod"], PARENTS)
    assert [(a.folder_id, a.depth, a.connections) for a in found] == [
        ("f_prod", 0, ("data", "web")),
        ("f_eu", 1, ("data",)),
    ]


def test_a_folder_attached_below_another_attached_folder_is_counted_from_the_outermost() -> None:
    found = plan_aggregators(SCHEMAS, ["f_prod", "f_root"], PARENTS)
    assert [(a.folder_id, a.depth) for a in found][:1] == [("f_root", 0)]
    assert ("f_prod", 1) in [(a.folder_id, a.depth) for a in found]


def test_aggregators_list_their_connections_explicitly_and_never_a_wildcard() -> None:
    rendered = render("w_ops1", 7, SCHEMAS, ["f_root"], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    spc = file_text(rendered, "aws.spc")
    block = spc[spc.index('connection "folder__root" {') :]
    block = block[: block.index("\n}\n") + 3]
    assert block == (
        'connection "folder__root" {\n'
        '  type        = "aggregator"\n'
        '  plugin      = "aws"\n'
        "  connections = [\n"
        '    "data",\n'
        '    "sandbox",\n'
        '    "web"\n'
        "  ]\n"
        "}\n"
    )
    assert "*" not in "".join(re.findall(r"connections = \[[^\]]*\]", spc))


@given(st.from_regex(HANDLE))
def test_no_aggregator_name_can_equal_a_connection_handle(handle: str) -> None:
    assert "__" not in handle
    assert aggregator_name("f_01jd8x4k2mzq7v3n5c9w0t6y1r") != handle


@given(st.from_regex(r"^f_[a-z0-9]{1,60}\Z"))
def test_an_aggregator_name_is_a_valid_steampipe_connection_name(folder_id: str) -> None:
    name = aggregator_name(folder_id)
    assert name.startswith(AGGREGATOR_PREFIX)
    assert STEAMPIPE_NAME.match(name)
    assert len(name) <= 63
    assert not name.startswith(("steampipe_", "pg_"))
    assert name != "public"


def test_an_aggregator_is_named_by_its_folder_id_alone() -> None:
    assert aggregator_name("f_01jd8x4k2mzq7v3n5c9w0t6y1r") == "folder__01jd8x4k2mzq7v3n5c9w0t6y1r"
    long_id = "f_" + "a" * 60  # past Steampipe's 63 characters: a hash of the id
    assert aggregator_name(long_id) != aggregator_name("f_" + "a" * 59 + "b")
    assert len(aggregator_name(long_id)) <= 63


def test_renaming_a_connection_changes_no_aggregator_name_and_the_rename_shows_in_its_list() -> (
    None
):
    before = plan_aggregators(SCHEMAS, ["f_root"], PARENTS)
    renamed = [schema("website", "f_prod", "111111111111"), *SCHEMAS[1:]]
    after = plan_aggregators(renamed, ["f_root"], PARENTS)
    assert [a.name for a in before] == [a.name for a in after]
    assert after[0].connections == ("data", "sandbox", "website")


def test_the_search_path_puts_aggregators_first_outermost_first_then_connections_by_name() -> None:
    rendered = render("w_ops1", 7, SCHEMAS, ["f_root"], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    assert rendered.search_path == (
        "folder__root",
        "folder__dev",
        "folder__prod",
        "folder__eu",
        "data",
        "sandbox",
        "web",
    )
    spc = file_text(rendered, "aws.spc")
    assert '#   search_path_prefix = "folder__root,folder__dev,folder__prod,folder__eu"\n' in spc
    assert "\noptions " not in spc  # one options "database" block per folder: the user's own


def test_each_profile_assumes_the_member_role_with_the_external_id_and_the_credential_source() -> (
    None
):
    with_region = [
        *SCHEMAS[:2],
        schema("sandbox", "f_dev", "333333333333", default_region="eu-west-1"),
    ]
    rendered = render("w_ops1", 7, with_region, [], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    text = file_text(rendered, "aws_config")
    assert re.findall(r"^\[profile (\w+)\]$", text, re.M) == ["data", "sandbox", "web"]
    web = text[text.index("[profile web]") :]
    assert web == (
        "[profile web]\n"
        "role_arn = arn:aws:iam::111111111111:role/canopy-member\n"
        "external_id = o_ops:abcd1234\n"
        "role_session_name = canopy-w_ops1\n"
        "credential_source = Environment\n"
    )
    assert "region = eu-west-1\n" in text[text.index("[profile sandbox]") :]
    profile = render(
        "w_ops1", 7, SCHEMAS, [], PARENTS, CredentialSource("source_profile", "platform"), []
    )
    assert "\nsource_profile = platform\n" in file_text(profile, "aws_config")
    assert "credential_source" not in file_text(profile, "aws_config").split("\n\n", 1)[1]


def test_a_custom_endpoint_reaches_the_profile_too_so_the_role_is_assumed_there() -> None:
    local = [schema("web", "f_prod", endpoint_url="http://localhost:4566")]
    rendered = render("w_ops1", 7, local, [], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    assert "\nendpoint_url = http://localhost:4566\n" in file_text(rendered, "aws_config")


def test_the_role_session_name_is_deterministic_and_within_aws_limits() -> None:
    assert session_name("w_ops1") == "canopy-w_ops1"
    long_id = "w_" + "a" * 60
    assert len(session_name(long_id)) == 64
    assert session_name(long_id) == session_name(long_id)
    assert session_name(long_id) != session_name("w_" + "a" * 59 + "b")
    assert re.match(r"^[\w+=,.@-]{2,64}\Z", session_name(long_id))


def test_the_same_inputs_in_any_order_give_the_same_bytes_and_etag() -> None:
    first = render(
        "w_ops1", 7, SCHEMAS, ["f_root", "f_prod"], PARENTS, DEFAULT_CREDENTIAL_SOURCE, []
    )
    again = render(
        "w_ops1",
        7,
        list(reversed(SCHEMAS)),
        ["f_prod", "f_root"],
        dict(reversed(PARENTS.items())),
        DEFAULT_CREDENTIAL_SOURCE,
        [],
    )
    assert [(f.path, f.data) for f in first.files] == [(f.path, f.data) for f in again.files]
    assert first.etag == again.etag
    assert [f.path for f in first.files] == ["aws.spc", "aws_config"]


def test_the_etag_changes_with_any_byte_of_any_file() -> None:
    base = render("w_ops1", 7, SCHEMAS, ["f_root"], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    renamed = render(
        "w_ops1",
        7,
        [schema("website", "f_prod"), *SCHEMAS[1:]],
        ["f_root"],
        PARENTS,
        DEFAULT_CREDENTIAL_SOURCE,
        [],
    )
    profile = render(
        "w_ops1",
        7,
        SCHEMAS,
        ["f_root"],
        PARENTS,
        CredentialSource("credential_source", "EcsContainer"),
        [],
    )
    assert len({base.etag, renamed.etag, profile.etag}) == 3
    # Patterns change the report, not the files.
    patterns = render("w_ops1", 7, SCHEMAS, ["f_root"], PARENTS, DEFAULT_CREDENTIAL_SOURCE, ["w*"])
    assert patterns.etag == base.etag
    assert [(m.pattern, m.schemas) for m in patterns.pattern_matches] == [("w*", ("web",))]


def test_no_file_holds_a_time_or_the_revision() -> None:
    at_7 = render("w_ops1", 7, SCHEMAS, ["f_root"], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    at_9 = render("w_ops1", 9, SCHEMAS, ["f_root"], PARENTS, DEFAULT_CREDENTIAL_SOURCE, [])
    assert at_7.etag == at_9.etag
    assert (at_7.revision, at_9.revision) == (7, 9)


def test_an_empty_workspace_renders_files_with_their_headers_only() -> None:
    rendered = render("w_ops1", 0, [], [], {}, DEFAULT_CREDENTIAL_SOURCE, ["aws_*"])
    assert rendered.search_path == ()
    assert "connection " not in file_text(rendered, "aws.spc").replace("# Each connection", "")
    assert "[profile" not in file_text(rendered, "aws_config")
    assert [(m.pattern, m.schemas) for m in rendered.pattern_matches] == [("aws_*", ())]


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("^\\d+$", '"^\\\\d+$"'),
        ("${var.x}", '"$\\u007bvar.x}"'),  # no template interpolation
        ("%{ if x }", '"%\\u007b if x }"'),  # no template directive
        ("$${x}", '"$$\\u007bx}"'),
        ("%{", '"%\\u007b"'),  # python-hcl2 refuses the spec's "%%{" with no "}" after it
        ("line\nbreak\ttab", '"line\\nbreak\\ttab"'),
        ("bell\x07", '"bell\\u0007"'),
        ("café", '"café"'),
    ],
)
def test_hcl_strings_escape_quotes_backslashes_controls_and_templates(
    value: str, literal: str
) -> None:
    assert hcl_string(value) == literal


# -- the request ----------------------------------------------------------------------------------


def fields_of(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def test_an_unset_credential_source_is_the_documented_default() -> None:
    assert check_request("w_ops1", (None, ""), []) == CredentialSource(
        "credential_source", "Environment"
    )


@pytest.mark.parametrize("value", ["Environment", "Ec2InstanceMetadata", "EcsContainer"])
def test_the_three_aws_credential_sources_are_accepted(value: str) -> None:
    assert check_request("w_ops1", ("credential_source", value), []) == CredentialSource(
        "credential_source", value
    )


@pytest.mark.parametrize("value", ["", "environment", "Env", "Environment\n", "Vault"])
def test_any_other_credential_source_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_request("w_ops1", ("credential_source", value), [])
    assert fields_of(raised.value) == ["credential_source.credential_source"]


@pytest.mark.parametrize("value", ["", "a b", "x]", "[profile x", "x\ny", "a" * 65, "-dash"])
def test_a_source_profile_that_is_not_a_safe_profile_name_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_request("w_ops1", ("source_profile", value), [])
    assert fields_of(raised.value) == ["credential_source.source_profile"]


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_request("workspace", ("credential_source", "Vault"), ["ok_*", "[", ""])
    assert fields_of(raised.value) == [
        "workspace_id",
        "credential_source.credential_source",
        "connection_patterns[1]",
        "connection_patterns[2]",
    ]


def test_too_many_patterns_are_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_request("w_ops1", (None, ""), ["a*"] * 101)
    assert fields_of(raised.value) == ["connection_patterns"]
    assert check_request("w_ops1", (None, ""), ["a*"] * 100) == DEFAULT_CREDENTIAL_SOURCE
