"""A workspace's Steampipe configuration, rendered from its schemas at one revision of the
workspace schema log: `aws.spc` (a connection per schema, an aggregator per folder the workspace
uses) and `aws_config` (an AWS profile per schema that assumes the account's member role).

Pure functions turn the schemas and the folder structure into bytes; they sort everything and
write no time, so the same revision and request give the same bytes. `render_workspace_config`
reads what they need in one snapshot together with the log head, so the revision is exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from canopy.integration.v1 import integration_pb2 as ipb
from canopy_core.auth import Principal
from canopy_core.db import Database
from canopy_core.errors import InvalidArgument
from canopy_core.validation import Violations
from canopy_permissions import store
from canopy_permissions.connection_patterns import (
    MAX_PATTERNS,
    PatternMatch,
    match_patterns,
    pattern_problem,
)
from canopy_permissions.grants import workspace_member

SPC_PATH = "aws.spc"
AWS_CONFIG_PATH = "aws_config"
PLUGIN = "aws"

# Connection handles match ^[a-z](?:[a-z0-9]|_(?=[a-z0-9])){0,38}$: never two underscores in a
# row. Every aggregator name holds `__`, so none can ever equal a schema name.
AGGREGATOR_PREFIX = "folder__"
MAX_CONNECTION_NAME = 63  # Steampipe's limit (PostgreSQL's identifier length)
_ID_SUFFIX = re.compile(r"^[a-z0-9]+\Z")

# The AWS shared config's `credential_source` values (botocore and the AWS SDK for Go alike).
CREDENTIAL_SOURCES = ("Environment", "Ec2InstanceMetadata", "EcsContainer")
# A profile name that is safe in an INI section header and a `source_profile` value.
PROFILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}\Z")
PROFILE_NAME_RULE = (
    "must be 1-64 characters: letters, digits and '_', then also '.', '@', '+' or '-'"
)
MAX_SESSION_NAME = 64  # AWS's limit on RoleSessionName


@dataclass(frozen=True)
class CredentialSource:
    """Where the rendered profiles take the credentials they assume the member roles with: the
    AWS config setting (`source_profile` or `credential_source`) and its value."""

    setting: str
    value: str

    def describe(self) -> str:
        """How a reader of the config file should understand it."""
        if self.setting == "source_profile":
            return f"the credentials of the profile {self.value!r}"
        return f"credential_source {self.value}"


# The service's default: the credentials in the environment of the process that reads the
# profiles (AWS_ACCESS_KEY_ID, …). Canopy then never renders or sees a secret, and it works the
# same in a container, a Kubernetes pod (from a Secret) and on a laptop.
DEFAULT_CREDENTIAL_SOURCE = CredentialSource("credential_source", "Environment")


@dataclass(frozen=True)
class ConfigSchema:
    """What rendering needs of one schema: its name, account, folder and resolved settings
    (an encoded `EffectiveConnectionConfig`)."""

    name: str
    connection_id: str
    account_id: str
    folder_id: str
    config: bytes


@dataclass(frozen=True)
class Aggregator:
    """An aggregator of one folder: its name, how far below the outermost attached folder above
    it the folder is (0 for that folder), and its connections, sorted."""

    name: str
    folder_id: str
    depth: int
    connections: tuple[str, ...]


@dataclass(frozen=True)
class RenderedFile:
    """One file of the configuration."""

    path: str
    data: bytes

    @property
    def sha256(self) -> str:
        """The SHA-256 of its bytes, lower-case hex."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class WorkspaceConfig:
    """A rendered configuration and what it reflects."""

    workspace_id: str
    revision: int
    files: tuple[RenderedFile, ...]
    etag: str
    search_path: tuple[str, ...]
    pattern_matches: tuple[PatternMatch, ...]


# -- the request ---------------------------------------------------------------------------------


def check_request(
    workspace_id: str, credential_source: tuple[str | None, str], patterns: Sequence[str]
) -> CredentialSource:
    """Every bad field of a request at once (`INVALID_ARGUMENT`); the credential source to use.
    `credential_source` is (which of the oneof is set, its value)."""
    v = Violations()
    v.resource_id("workspace_id", workspace_id, "w")
    setting, value = credential_source
    source = DEFAULT_CREDENTIAL_SOURCE
    if setting == "credential_source":
        if value in CREDENTIAL_SOURCES:
            source = CredentialSource(setting, value)
        else:
            v.add(
                "credential_source.credential_source",
                f"must be one of {', '.join(CREDENTIAL_SOURCES)} (case matters)",
            )
    elif setting == "source_profile":
        if PROFILE_NAME.match(value):
            source = CredentialSource(setting, value)
        else:
            v.add("credential_source.source_profile", PROFILE_NAME_RULE)
    if len(patterns) > MAX_PATTERNS:
        v.add("connection_patterns", f"must hold at most {MAX_PATTERNS} patterns")
    else:
        for i, pattern in enumerate(patterns):
            problem = pattern_problem(pattern)
            if problem:
                v.add(f"connection_patterns[{i}]", problem)
    v.check()
    return source


# -- the pure parts ------------------------------------------------------------------------------


def aggregator_name(folder_id: str) -> str:
    """The aggregator of a folder: `folder__` and the folder id without its `f_`, which is stable
    (renames of the OU, the folder handle, the integration or the prefix leave it alone) and
    unique; a hash of the id where that would not be a valid Steampipe connection name."""
    suffix = folder_id.removeprefix("f_")
    name = AGGREGATOR_PREFIX + suffix
    if len(name) <= MAX_CONNECTION_NAME and _ID_SUFFIX.match(suffix):
        return name
    return AGGREGATOR_PREFIX + hashlib.sha256(folder_id.encode()).hexdigest()[:32]


def _chain(folder_id: str, parents: Mapping[str, str | None]) -> list[str]:
    """The folder and those above it, nearest first (bounded: a broken projection cannot loop)."""
    chain: list[str] = []
    current: str | None = folder_id
    while current is not None and current in parents and len(chain) <= len(parents):
        chain.append(current)
        current = parents[current]
    return chain


def plan_aggregators(
    schemas: Sequence[ConfigSchema],
    attached_folders: Sequence[str],
    parents: Mapping[str, str | None],
) -> list[Aggregator]:
    """An aggregator for every folder at or below a folder attached to the workspace that holds
    (at any depth) at least one of its schemas, listing those schemas; outermost folders first
    (by depth below the outermost attached folder, then by folder id)."""
    attached = set(attached_folders)
    covering: dict[str, list[tuple[str, int]]] = {}  # folder of a schema → (aggregated, depth)
    members: dict[str, list[str]] = {}
    depths: dict[str, int] = {}
    for schema in schemas:
        if schema.folder_id not in covering:
            chain = _chain(schema.folder_id, parents)
            outermost = max((i for i, f in enumerate(chain) if f in attached), default=-1)
            covering[schema.folder_id] = [(chain[i], outermost - i) for i in range(outermost + 1)]
        for folder_id, depth in covering[schema.folder_id]:
            members.setdefault(folder_id, []).append(schema.name)
            depths[folder_id] = depth
    return [
        Aggregator(aggregator_name(f), f, depths[f], tuple(sorted(members[f])))
        for f in sorted(members, key=lambda f: (depths[f], f))
    ]


def search_path(aggregators: Sequence[Aggregator], schemas: Sequence[ConfigSchema]) -> list[str]:
    """Aggregators first (outermost first), then every schema by name: an unqualified query
    reads every account of the workspace's outermost folder, not one arbitrary account."""
    return [a.name for a in aggregators] + sorted(s.name for s in schemas)


_HCL_SPECIAL = re.compile(r'["\\\x00-\x1f\x7f-\x9f]')
_HCL_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hcl_escape(found: re.Match[str]) -> str:
    return _HCL_ESCAPES.get(found[0]) or f"\\u{ord(found[0]):04x}"


def hcl_string(value: str) -> str:
    """An HCL quoted string literal holding exactly `value`: quotes, backslashes and control
    characters escaped, and the brace of `${` / `%{` written as the escape `\\u007b`, so that HCL
    reads no template in it. (The spec's own escapes, `$${` and `%%{`, are refused by
    python-hcl2 when no `}` follows them; an escape sequence never starts a template in either
    parser.)"""
    if _HCL_SPECIAL.search(value):
        value = _HCL_SPECIAL.sub(_hcl_escape, value)
    if "{" in value:
        value = value.replace("${", "$\\u007b").replace("%{", "%\\u007b")
    return f'"{value}"'


def _hcl_value(value: str | int | bool | Sequence[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return hcl_string(value)
    return "[" + ", ".join(hcl_string(v) for v in value) + "]"


def plugin_arguments(
    name: str, config: ipb.EffectiveConnectionConfig
) -> list[tuple[str, str | int | bool | list[str]]]:
    """The arguments of a schema's `connection` block: Steampipe's `plugin`, then the AWS
    plugin's own (see the README's table); a setting with no value is left to the plugin."""
    arguments: list[tuple[str, str | int | bool | list[str]]] = [
        ("plugin", PLUGIN),
        ("profile", name),
    ]
    if config.regions:  # the plugin refuses `regions = []`
        arguments.append(("regions", list(config.regions)))
    if config.default_region:
        arguments.append(("default_region", config.default_region))
    if config.max_error_retry_attempts > 0:
        arguments.append(("max_error_retry_attempts", config.max_error_retry_attempts))
    if config.min_error_retry_delay_ms > 0:
        arguments.append(("min_error_retry_delay", config.min_error_retry_delay_ms))
    if config.ignore_error_codes:
        arguments.append(("ignore_error_codes", list(config.ignore_error_codes)))
    if config.ignore_error_messages:
        arguments.append(("ignore_error_messages", list(config.ignore_error_messages)))
    if config.endpoint_url:
        arguments.append(("endpoint_url", config.endpoint_url))
    arguments.append(("s3_force_path_style", config.s3_force_path_style))
    return arguments


_ARGUMENT_WIDTH = len("max_error_retry_attempts")
_HEADER = (
    "# {what} of Canopy workspace {workspace}, rendered by Canopy's permissions service.\n"
    "# Do not edit: Canopy renders it anew whenever the workspace's schemas change.\n"
)


def render_spc(
    workspace_id: str,
    schemas: Sequence[tuple[ConfigSchema, ipb.EffectiveConnectionConfig]],
    aggregators: Sequence[Aggregator],
) -> bytes:
    """`aws.spc`: a connection per schema (by name), then an aggregator per folder."""
    lines = [
        _HEADER.format(what="Steampipe connections", workspace=workspace_id)
        + "# Each connection reads its account through the AWS profile of the same name in\n"
        + f"# {AWS_CONFIG_PATH}: run Steampipe with AWS_CONFIG_FILE naming that file.\n"
        + "#\n"
        + "# Recommended search path: the folder aggregators, outermost first, then the\n"
        + '# connections. Steampipe allows one options "database" block per configuration\n'
        + "# folder, so this file does not set it; to use it, add this to your own:"
    ]
    if aggregators:
        prefix = ",".join(a.name for a in aggregators)
        lines.append(f"#   search_path_prefix = {hcl_string(prefix)}")
    else:
        lines.append("#   (no aggregator: the workspace attaches no folder)")
    quoted = {schema.name: hcl_string(schema.name) for schema, _ in schemas}
    for schema, config in sorted(schemas, key=lambda pair: pair[0].name):
        lines.append("")
        lines.append(f"# account {schema.account_id} (connection {schema.connection_id})")
        lines.append(f"connection {quoted[schema.name]} {{")
        for key, value in plugin_arguments(schema.name, config):
            lines.append(f"  {key.ljust(_ARGUMENT_WIDTH)} = {_hcl_value(value)}")
        lines.append("}")
    for aggregator in aggregators:
        count = len(aggregator.connections)
        lines.append("")
        lines.append(
            f"# folder {aggregator.folder_id}: the workspace's {count} "
            f"{'connection' if count == 1 else 'connections'} at or below it"
        )
        lines.append(f"connection {hcl_string(aggregator.name)} {{")
        lines.append('  type        = "aggregator"')
        lines.append(f"  plugin      = {hcl_string(PLUGIN)}")
        lines.append("  connections = [")
        listed = [f"    {quoted[name]}," for name in aggregator.connections]
        listed[-1] = listed[-1].removesuffix(",")
        lines.extend(listed)
        lines.append("  ]")
        lines.append("}")
    return ("\n".join(lines) + "\n").encode()


def session_name(workspace_id: str) -> str:
    """The role session name of a workspace's profiles: `canopy-<workspace id>`, or, past AWS's
    64 characters, the id's start and a hash of it (CloudTrail shows it in every member account)."""
    name = f"canopy-{workspace_id}"
    if len(name) <= MAX_SESSION_NAME:
        return name
    digest = hashlib.sha256(workspace_id.encode()).hexdigest()[:16]
    return f"{name[: MAX_SESSION_NAME - 17]}-{digest}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _ini_value(value: str) -> str:
    # Every value comes from a validated setting; a line break would end the value early.
    if _CONTROL.search(value):
        raise ValueError(f"an AWS config value holds a control character: {value!r}")
    return value


def render_aws_config(
    workspace_id: str,
    schemas: Sequence[tuple[ConfigSchema, ipb.EffectiveConnectionConfig]],
    source: CredentialSource,
) -> bytes:
    """`aws_config`: a profile per schema (by name) that assumes the account's member role with
    the external id, from the credential source."""
    lines = [
        _HEADER.format(what="AWS profiles", workspace=workspace_id)
        + "# Each profile assumes one account's member role with the integration's external id,\n"
        + f"# from {source.describe()}."
    ]
    role_session = session_name(workspace_id)
    for schema, config in sorted(schemas, key=lambda pair: pair[0].name):
        lines.append("")
        lines.append(f"[profile {schema.name}]")
        lines.append(f"role_arn = {_ini_value(config.role_arn)}")
        if config.external_id:
            lines.append(f"external_id = {_ini_value(config.external_id)}")
        lines.append(f"role_session_name = {role_session}")
        lines.append(f"{source.setting} = {_ini_value(source.value)}")
        if config.default_region:
            lines.append(f"region = {_ini_value(config.default_region)}")
        if config.endpoint_url:
            lines.append(f"endpoint_url = {_ini_value(config.endpoint_url)}")
    return ("\n".join(lines) + "\n").encode()


def etag_of(files: Sequence[RenderedFile]) -> str:
    """A hash of every file's path and bytes."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.path}\0{len(file.data)}\0{file.sha256}\n".encode())
    return digest.hexdigest()


def render(
    workspace_id: str,
    revision: int,
    schemas: Sequence[ConfigSchema],
    attached_folders: Sequence[str],
    parents: Mapping[str, str | None],
    source: CredentialSource,
    patterns: Sequence[str],
) -> WorkspaceConfig:
    """The whole configuration of a workspace from what the store holds."""
    with_config = [(s, ipb.EffectiveConnectionConfig.FromString(s.config)) for s in schemas]
    aggregators = plan_aggregators(schemas, attached_folders, parents)
    files = (
        RenderedFile(SPC_PATH, render_spc(workspace_id, with_config, aggregators)),
        RenderedFile(AWS_CONFIG_PATH, render_aws_config(workspace_id, with_config, source)),
    )
    return WorkspaceConfig(
        workspace_id=workspace_id,
        revision=revision,
        files=files,
        etag=etag_of(files),
        search_path=tuple(search_path(aggregators, schemas)),
        pattern_matches=tuple(match_patterns(patterns, (s.name for s in schemas))),
    )


# -- the use case --------------------------------------------------------------------------------


async def render_workspace_config(
    db: Database,
    principal: Principal,
    workspace_id: str,
    credential_source: tuple[str | None, str],
    patterns: Sequence[str],
) -> WorkspaceConfig:
    """A workspace's configuration at the log's current revision (members of the workspace,
    owners of its org or tenant, system callers; anyone else gets what a workspace that does not
    exist gets)."""
    source = check_request(workspace_id, credential_source, patterns)
    async with (
        db.connection() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        await workspace_member(conn, principal, workspace_id)
        revision = int(await conn.fetchval("SELECT revision FROM event_log_head"))
        stored = await store.workspace_schemas(conn, workspace_id)
        folders = await store.schema_folders(conn, workspace_id)
        attached = await store.attached_folders(conn, workspace_id)
        parents = await store.folder_parents(conn, sorted(set(attached.values())))
    schemas = [
        ConfigSchema(
            s.name, s.connection_id, s.account_id, folders.get(s.connection_id, ""), s.config
        )
        for s in stored
    ]
    if source.setting == "source_profile" and any(s.name == source.value for s in schemas):
        # The profile would then assume a member role from itself.
        raise InvalidArgument.field(
            "credential_source.source_profile",
            f"is the name of one of the workspace's own profiles (schema {source.value!r})",
        )
    # Thousands of schemas take tens of milliseconds: off the event loop, which serves streams.
    return await asyncio.to_thread(
        render, workspace_id, revision, schemas, sorted(attached), parents, source, patterns
    )
