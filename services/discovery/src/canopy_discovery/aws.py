"""Talking to AWS: the platform's session, assumed-role sessions that refresh, clients, and what a
failed call means.

Every AWS problem discovery meets becomes one `DiscoveryFailure` with an UPPER_SNAKE reason that
a user can act on; `classify` is the one place that decides which.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.credentials import (  # type: ignore[import-untyped]
    AioCredentialResolver,
    AioRefreshableCredentials,
)
from aiobotocore.httpsession import AIOHTTPSession  # type: ignore[import-untyped]
from aiobotocore.session import AioSession, get_session  # type: ignore[import-untyped]
from botocore.credentials import CredentialProvider  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.utils import parse_timestamp  # type: ignore[import-untyped]

SESSION_NAME = "canopy-discovery"
# A fixed User-Agent names Canopy in the customer's CloudTrail, and spares botocore rebuilding
# its own (a noticeable share of a request's CPU time) on every call.
USER_AGENT = "canopy-discovery"
DEFAULT_SESSION_SECONDS = 3600

ASSUME_ROLE_DENIED = "ASSUME_ROLE_DENIED"
NOT_MANAGEMENT_OR_DELEGATED_ADMIN = "NOT_MANAGEMENT_OR_DELEGATED_ADMIN"
ORGANIZATION_NOT_IN_USE = "ORGANIZATION_NOT_IN_USE"
ACCESS_DENIED = "ACCESS_DENIED"
ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
UNREACHABLE = "UNREACHABLE"
THROTTLED = "THROTTLED"
CRAWL_DEADLINE_EXCEEDED = "CRAWL_DEADLINE_EXCEEDED"
CALL_TIMEOUT = "CALL_TIMEOUT"
UNSUPPORTED_PARTITION = "UNSUPPORTED_PARTITION"
TRUSTED_ACCOUNT_MISMATCH = "TRUSTED_ACCOUNT_MISMATCH"
OTHER = "OTHER"

# Error codes AWS uses for "slow down"; Organizations says TooManyRequestsException (HTTP 400).
THROTTLING_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
# Codes that mean "try the same call again later"; the crawl retries them with backoff.
TRANSIENT_CODES = THROTTLING_CODES | {
    "ConcurrentModificationException",
    "ServiceException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
}
_UNAVAILABLE_STATUS = frozenset({502, 503, 504})
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
    }
)


@dataclass(frozen=True)
class AwsSettings:
    """Where discovery calls AWS, and with which of the platform's own credentials."""

    endpoint_url: str | None = None  # moto or a proxy in tests; None calls real AWS
    region: str = "us-east-1"
    partition: str = "aws"  # the only partition whose roles the platform can assume
    access_key_id: str | None = None  # None: the default chain (environment, profile, IMDS…)
    secret_access_key: str | None = None
    session_token: str | None = None


class DiscoveryFailure(Exception):
    """Why a crawl or an access test could not read the organization: an UPPER_SNAKE reason and a
    message that names what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def error_code(error: BaseException | None) -> str:
    """The AWS error code of a ClientError (`TooManyRequestsException`…), else ""."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def is_access_denied(error: BaseException | None) -> bool:
    """Whether AWS answered AccessDenied(Exception): the caller may not make this call."""
    return error_code(error) in {"AccessDenied", "AccessDeniedException"}


def http_status(error: BaseException) -> int:
    """The HTTP status of a ClientError's answer, else 0."""
    if isinstance(error, ClientError):
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return 0


def is_throttling(error: BaseException) -> bool:
    """Whether AWS asked us to slow down."""
    return error_code(error) in THROTTLING_CODES


def is_transient(error: BaseException) -> bool:
    """Whether the same call may well succeed if sent again a little later."""
    if isinstance(error, ClientError):
        return error_code(error) in TRANSIENT_CODES or http_status(error) in _UNAVAILABLE_STATUS
    # A dropped connection or a slow answer is worth another try; the crawl deadline bounds it.
    return isinstance(error, HTTPClientError | EndpointConnectionError | TimeoutError)


def _aws_message(error: ClientError) -> str:
    message = str(error.response.get("Error", {}).get("Message", "")).strip()
    operation = getattr(error, "operation_name", "") or "the call"
    code = error_code(error)
    return f"{operation} failed with {code}" + (f": {message}" if message else "")


def classify(error: BaseException) -> DiscoveryFailure:
    """The DiscoveryFailure a failed AWS call stands for (a DiscoveryFailure stays itself)."""
    if isinstance(error, DiscoveryFailure):
        return error
    if isinstance(error, ClientError):
        code = error_code(error)
        text = _aws_message(error)
        if code in THROTTLING_CODES:
            return DiscoveryFailure(THROTTLED, f"AWS kept throttling the crawl: {text}")
        if code == "AWSOrganizationsNotInUseException":
            return DiscoveryFailure(
                ORGANIZATION_NOT_IN_USE,
                f"the role's account is not a member of an AWS Organization: {text}",
            )
        if is_access_denied(error):
            return DiscoveryFailure(ACCESS_DENIED, f"AWS denied access: {text}")
        if code in _CREDENTIAL_CODES:
            return DiscoveryFailure(
                ACCESS_DENIED, f"AWS refused the platform's own credentials: {text}"
            )
        if http_status(error) in _UNAVAILABLE_STATUS:
            return DiscoveryFailure(
                UNREACHABLE,
                f"the AWS endpoint is unavailable (HTTP {http_status(error)}): {text}",
            )
        return DiscoveryFailure(OTHER, text)
    if isinstance(error, ReadTimeoutError | TimeoutError):
        return DiscoveryFailure(CALL_TIMEOUT, f"an AWS call took too long to answer: {error}")
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
        return DiscoveryFailure(UNREACHABLE, f"cannot reach the AWS endpoint: {error}")
    if isinstance(error, HTTPClientError | ConnectionError):
        return DiscoveryFailure(UNREACHABLE, f"the connection to AWS failed: {error}")
    if isinstance(error, NoCredentialsError):
        return DiscoveryFailure(
            ACCESS_DENIED,
            "the platform has no AWS credentials of its own to call STS AssumeRole with",
        )
    return DiscoveryFailure(OTHER, f"{type(error).__name__}: {error}")


class SharedTlsHttpSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, but the TLS context that checks AWS's certificates is built
    once per process (per CA bundle) and shared by every client.

    Building it reads and parses the whole CA bundle, ~30 ms of CPU, and aiobotocore does it for
    every client it creates: twice per crawl (STS, then Organizations), before the first
    Organizations call can leave. An SSLContext is made to be shared between connections.
    """

    _contexts: ClassVar[dict[Any, ssl.SSLContext]] = {}

    def _build_verify_context(self) -> ssl.SSLContext:
        if self._cert_file:  # aiobotocore adds the client certificate to the context: not shared
            built: ssl.SSLContext = super()._build_verify_context()
            return built
        context = self._contexts.get(self._verify)  # True, or the path of a CA bundle
        if context is None:
            context = self._contexts[self._verify] = super()._build_verify_context()
        return context


def client_config(
    *,
    concurrency: int = 10,
    call_timeout: float = 20.0,
    connect_timeout: float = 5.0,
    validate: bool = True,
) -> Any:
    """Client settings for discovery: no retries of botocore's own (the crawl retries with its
    shared budget), bounded timeouts, and a pool large enough for every concurrent call.
    `validate=False` skips botocore's check of each call's parameters against the API model."""
    return AioConfig(
        parameter_validation=validate,
        user_agent=USER_AGENT,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(connect_timeout, call_timeout),
        read_timeout=call_timeout,
        max_pool_connections=max(10, concurrency),
        http_session_cls=SharedTlsHttpSession,
    )


def fast_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser without its local-time detour for epoch numbers (the JSON
    protocol's form), which costs more than the rest of parsing an account."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed: datetime = parse_timestamp(value)
    return parsed


_LOADER: Any = None


def new_session() -> AioSession:
    """An aiobotocore session that parses timestamps quickly."""
    global _LOADER
    session = get_session()
    # One data loader for the process: it caches the service models and endpoints.json it has
    # read, which a fresh session would otherwise read and parse again (~40 ms per client).
    if _LOADER is None:
        _LOADER = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _LOADER)
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=fast_timestamp
    )
    return session


def platform_session(aws: AwsSettings) -> AioSession:
    """A session with the platform's own credentials (explicit, else the default chain)."""
    session = new_session()
    if aws.access_key_id and aws.secret_access_key:
        session.set_credentials(aws.access_key_id, aws.secret_access_key, aws.session_token)
    return session


def create_client(
    session: AioSession,
    service: str,
    aws: AwsSettings,
    *,
    concurrency: int = 10,
    call_timeout: float = 20.0,
    validate: bool = True,
) -> AbstractAsyncContextManager[Any]:
    """An async context manager yielding a client of `service` on `session`'s credentials."""
    config = client_config(concurrency=concurrency, call_timeout=call_timeout, validate=validate)
    manager: AbstractAsyncContextManager[Any] = session.create_client(
        service, region_name=aws.region, endpoint_url=aws.endpoint_url, config=config
    )
    return manager


def organizations_client(
    session: AioSession, aws: AwsSettings, *, concurrency: int = 10, call_timeout: float = 20.0
) -> AbstractAsyncContextManager[Any]:
    """An Organizations client; one per crawl, so every call shares its pool and rate budget.

    It sends only ids and tokens AWS itself gave out, and page sizes of ours, so it skips
    botocore's client-side parameter validation (AWS validates them anyway).
    """
    return create_client(
        session,
        "organizations",
        aws,
        concurrency=concurrency,
        call_timeout=call_timeout,
        validate=False,
    )


def assume_role_denied(role_arn: str, detail: str) -> DiscoveryFailure:
    """The failure of an AssumeRole that STS refused."""
    return DiscoveryFailure(
        ASSUME_ROLE_DENIED,
        f"STS refused to let the platform assume {role_arn}: check that the role exists, that "
        f"its trust policy trusts the platform's account, and that its sts:ExternalId condition "
        f"matches the external id ({detail})",
    )


def not_management_account(detail: str) -> DiscoveryFailure:
    """The failure of an Organizations call only the management account (or a delegated
    administrator) may make."""
    return DiscoveryFailure(
        NOT_MANAGEMENT_OR_DELEGATED_ADMIN,
        "the discovery role must be in the organization's management account or in a delegated "
        f"administrator account, and allowed to read the organization ({detail})",
    )


def partition_failure(aws: AwsSettings, role_arn: str) -> DiscoveryFailure | None:
    """The failure of a role in another partition than the platform's own, else None: IAM
    trust never crosses partitions, so such a role could never be assumed."""
    parts = role_arn.split(":")
    partition = parts[1] if len(parts) > 1 else ""
    if partition == aws.partition:
        return None
    return DiscoveryFailure(
        UNSUPPORTED_PARTITION,
        f"the role {role_arn} is in partition {partition!r}; this deployment serves partition "
        f"{aws.partition!r} only (CANOPY_AWS_PARTITION)",
    )


async def assume_role(
    sts: Any, role_arn: str, external_id: str, duration_seconds: int = DEFAULT_SESSION_SECONDS
) -> dict[str, str]:
    """Call AssumeRole; the credentials in botocore's metadata shape (`expiry_time` ISO 8601)."""
    try:
        answer = await sts.assume_role(
            RoleArn=role_arn,
            RoleSessionName=SESSION_NAME,
            ExternalId=external_id,
            DurationSeconds=duration_seconds,
        )
    except ClientError as error:
        if is_access_denied(error):
            raise assume_role_denied(role_arn, _aws_message(error)) from error
        raise classify(error) from error
    except Exception as error:
        raise classify(error) from error
    credentials = answer["Credentials"]
    expiration: datetime = credentials["Expiration"]
    return {
        "access_key": credentials["AccessKeyId"],
        "secret_key": credentials["SecretAccessKey"],
        "token": credentials["SessionToken"],
        "expiry_time": expiration.isoformat(),
    }


class _Fixed(CredentialProvider):  # type: ignore[misc]
    """A credential provider that always answers with the credentials it was given."""

    METHOD = "canopy-assume-role"

    def __init__(self, credentials: Any) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> Any:
        return self._credentials


def _session_with(credentials: Any) -> AioSession:
    session = new_session()
    # Registering a resolver (rather than static keys) keeps the credentials refreshable: every
    # client made on this session asks them for keys before each request.
    session.register_component("credential_provider", AioCredentialResolver([_Fixed(credentials)]))
    return session


async def assumed_session(
    aws: AwsSettings,
    role_arn: str,
    external_id: str,
    *,
    duration_seconds: int = DEFAULT_SESSION_SECONDS,
) -> AioSession:
    """A session acting as `role_arn` (AssumeRole with the external id), whose credentials assume
    the role again before they expire, so a long crawl never runs on expired keys.

    Raises DiscoveryFailure: UNSUPPORTED_PARTITION for a role of another partition,
    ASSUME_ROLE_DENIED when STS refuses, else what `classify` says.
    """
    if (wrong_partition := partition_failure(aws, role_arn)) is not None:
        raise wrong_partition
    base = platform_session(aws)

    async def refresh() -> dict[str, str]:
        async with create_client(base, "sts", aws) as sts:
            return await assume_role(sts, role_arn, external_id, duration_seconds)

    keys = await refresh()
    credentials = AioRefreshableCredentials(
        access_key=keys["access_key"],
        secret_key=keys["secret_key"],
        token=keys["token"],
        expiry_time=datetime.fromisoformat(keys["expiry_time"]),
        refresh_using=refresh,
        method="canopy-assume-role",
        # Asked before every request whether a refresh is due; botocore's default clock works
        # in local time through dateutil, a noticeable part of a crawl's CPU.
        time_fetcher=_utc_now,
    )
    return _session_with(credentials)


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def session_credentials(session: AioSession) -> Any:
    """The session's current (refreshed if due) frozen credentials."""
    credentials = await session.get_credentials()
    return await credentials.get_frozen_credentials()
