"""The IAM roles an integration needs: external ids for their trust policies, and the
CloudFormation that creates them, trusting the platform account (configured or derived, see
`trusted_account`) in the partition the deployment serves."""

from __future__ import annotations

from canopy_core.auth import Principal
from canopy_core.errors import FieldViolation, InvalidArgument
from canopy_core.event_queues import EVENT_PARTITIONS
from canopy_integration import aws, templates
from canopy_integration.errors import UnsupportedPartition
from canopy_integration.integrations import Context, check_id, readable, resolve_scope


async def generate_external_id(
    ctx: Context,
    principal: Principal,
    tenant_id: str | None,
    org_id: str | None,
    suffix: str | None,
) -> str:
    """`<owner id>:<8 characters>` for a scope the caller owns."""
    found: list[FieldViolation] = []
    if bool(tenant_id) == bool(org_id):
        found.append(FieldViolation("scope", "name exactly one tenant_id or org_id"))
    if suffix is not None and not aws.EXTERNAL_ID_SUFFIX.match(suffix):
        found.append(FieldViolation("suffix", "must be 8 characters of [a-z0-9]"))
    if found:
        raise InvalidArgument(found)
    scope, _info = await resolve_scope(ctx, principal, tenant_id, org_id)
    principal.require_owner(*scope.chain, resource=f"integrations of {scope.owner_id}")
    return aws.new_external_id(scope.owner_id, suffix)


async def render_role_template(
    ctx: Context,
    principal: Principal,
    kind: str,
    role_name: str,
    external_id: str,
    integration_id: str,
    event_queue: bool = False,
) -> tuple[str, str]:
    """CloudFormation for the discovery role (with `event_queue`, also the rule and queues of
    live updates) or the member-role StackSet, and the account it trusts. FAILED_PRECONDITION
    when that account is neither configured nor derivable."""
    if event_queue and kind != "discovery":
        raise InvalidArgument.field(
            "event_queue",
            "is for ROLE_TEMPLATE_KIND_DISCOVERY_ROLE only: the rule and queue go "
            "in the management (or delegated administrator) account, with the discovery role",
        )
    if event_queue and ctx.partition not in EVENT_PARTITIONS:
        raise InvalidArgument.field(
            "event_queue",
            f"is not available in partition {ctx.partition!r}: Canopy follows AWS Organizations "
            f"events in partition {EVENT_PARTITIONS[0]!r} only",
            reason=aws.UNSUPPORTED_PARTITION,
        )
    integration = None
    if integration_id:
        check_id("integration_id", integration_id, "i")
        async with ctx.db.connection() as conn:
            integration = await readable(conn, principal, integration_id)
    role_arn: aws.RoleArn | None = None
    if integration is not None:
        if kind == "discovery":
            role_arn = aws.parse_role_arn(integration.discovery_role_arn)
            if role_arn.partition != ctx.partition:
                raise UnsupportedPartition(integration.id, role_arn.arn, ctx.partition)
            role_name = role_name or role_arn.name
            external_id = external_id or integration.discovery_external_id
        else:
            role_name = role_name or integration.member_role_name
            external_id = (
                external_id or integration.member_external_id or integration.discovery_external_id
            )
    found: list[FieldViolation] = []
    problem = aws.role_name_problem(role_name) if role_name else "is required"
    if problem:
        found.append(FieldViolation("role_name", problem))
    owner = external_id.partition(":")[0]
    description, reason = (
        aws.external_id_problem(external_id, owner)
        if external_id
        else (
            "is required",
            None,
        )
    )
    if description:
        found.append(FieldViolation("external_id", description))
    if found:
        raise InvalidArgument(found, reason=reason)
    # The external id must belong to a scope the caller may act for.
    if integration is None or external_id.partition(":")[0] != integration.scope.owner_id:
        tenant_id, org_id = (None, owner) if owner.startswith("o_") else (owner, None)
        scope, _info = await resolve_scope(ctx, principal, tenant_id, org_id, field="external_id")
        principal.require_member(*scope.chain, resource=f"external ids of {owner}")
    # Only now, for a request that is otherwise good: which account to trust.
    trusted = await ctx.trusted_account.account_id()
    if kind == "discovery":
        role: aws.RoleArn | str = (
            role_arn if role_arn is not None and role_arn.name == role_name else role_name
        )
        rendered = templates.render_discovery_role(
            role, external_id, trusted, ctx.partition, event_queue=event_queue
        )
    else:
        rendered = templates.render_member_role(role_name, external_id, trusted, ctx.partition)
    return rendered, trusted
