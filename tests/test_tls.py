"""TLS and mTLS on the gRPC ports: the services call each other over it (CANOPY_TLS_CA_FILE with
their own certificate), clients without the right certificate are refused, and the `canopy`
command speaks it too. Certificates are made here with `cryptography`."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from canopy.integration.v1 import integration_pb2 as pb
from canopy.integration.v1 import integration_service_pb2 as rpc
from canopy.integration.v1 import integration_service_pb2_grpc as rpc_grpc
from canopy.permissions.v1 import directory_service_pb2_grpc as dgrpc
from canopy.permissions.v1 import permission_service_pb2 as prpc
from canopy.permissions.v1 import permission_service_pb2_grpc as pgrpc
from canopy.type.v1 import types_pb2
from canopy_cli.main import app
from canopy_core.server import RunningService, serve
from canopy_core.tls import channel_credentials
from canopy_integration.server import spec as integration_spec
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.server import spec as permissions_spec
from canopy_permissions.settings import PermissionsSettings
from tests.helpers import bearer, free_port, token
from tests.integration.conftest import SYSTEM, seed_directory


@dataclass(frozen=True)
class Pki:
    """Files of a CA, a certificate it signed for 127.0.0.1 (server and client use), and a
    certificate of another CA."""

    ca: Path
    cert: Path
    key: Path
    stranger_cert: Path
    stranger_key: Path


def _key_file(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, stranger_ca_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    service_key, stranger_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    return Pki(
        ca=_pem(folder / "ca.pem", _certificate("canopy-ca", ca_key, None)),
        cert=_pem(
            folder / "service.pem", _certificate("canopy", service_key, ("canopy-ca", ca_key))
        ),
        key=_key_file(folder / "service.key", service_key),
        stranger_cert=_pem(
            folder / "stranger.pem",
            _certificate("stranger", stranger_key, ("other-ca", stranger_ca_key)),
        ),
        stranger_key=_key_file(folder / "stranger.key", stranger_key),
    )


@dataclass
class Suite:
    integration: RunningService
    permissions: RunningService

    @property
    def integration_address(self) -> str:
        return f"127.0.0.1:{self.integration.port}"

    @property
    def permissions_address(self) -> str:
        return f"127.0.0.1:{self.permissions.port}"


@pytest.fixture
async def suite(service_env: dict[str, Any], pki: Pki) -> AsyncIterator[Suite]:
    """Integration and permissions serving mTLS, calling each other over it."""
    ports = {"integration": free_port(), "permissions": free_port()}
    common = {
        **service_env,
        "tls_cert_file": pki.cert,
        "tls_key_file": pki.key,
        "tls_client_ca_file": pki.ca,
        "tls_ca_file": pki.ca,
        "integration_address": f"127.0.0.1:{ports['integration']}",
        "permissions_address": f"127.0.0.1:{ports['permissions']}",
    }
    permissions = await serve(
        permissions_spec(),
        PermissionsSettings(**{**common, "port": ports["permissions"], "db_schema": "permissions"}),
    )
    integration = await serve(
        integration_spec(),
        IntegrationSettings(**{**common, "port": ports["integration"], "db_schema": "integration"}),
    )
    yield Suite(integration, permissions)
    await integration.stop()
    await permissions.stop()


def _secure(address: str, pki: Pki) -> grpc.aio.Channel:
    credentials = channel_credentials(pki.ca, pki.cert, pki.key)
    assert credentials is not None
    return grpc.aio.secure_channel(address, credentials)


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=3
    )
    return int(reply.status)


async def test_the_services_call_each_other_over_mtls(suite: Suite, pki: Pki) -> None:
    owner = bearer(token(o_ops="owner"))
    async with (
        _secure(suite.permissions_address, pki) as permissions,
        _secure(suite.integration_address, pki) as integration,
    ):
        await seed_directory(dgrpc.DirectoryServiceStub(permissions))
        # Plan gating: the integration service asks the directory (permissions) over mTLS.
        created = (
            await rpc_grpc.IntegrationServiceStub(integration).CreateIntegration(
                rpc.CreateIntegrationRequest(
                    integration=pb.Integration(
                        handle="aws-tls",
                        scope=types_pb2.Scope(org_id="o_ops"),
                        discovery_access=pb.AwsDiscoveryAccess(
                            role_arn="arn:aws:iam::111111111111:role/d",
                            external_id="o_ops:abcd1234",
                        ),
                        member_access=pb.AwsMemberAccess(role_name="m"),
                    ),
                    initial_permissions=pb.RootFolderPermissions(
                        mode=pb.ROOT_FOLDER_PERMISSIONS_MODE_ALL_WORKSPACES
                    ),
                ),
                metadata=owner,
            )
        ).integration
        # The tree projection: permissions follows the integration service's log over mTLS.
        stub = pgrpc.PermissionServiceStub(permissions)
        for _ in range(200):
            try:
                reply = await stub.GetPermissions(
                    prpc.GetPermissionsRequest(folder_id=created.root_folder_id), metadata=SYSTEM
                )
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the permissions service never projected the root folder")
        assert [g.grantee.org_id for g in reply.permissions.direct_grants] == ["o_ops"]


async def test_clients_without_trust_or_a_certificate_of_the_ca_are_refused(
    suite: Suite, pki: Pki
) -> None:
    address = suite.integration_address
    async with _secure(address, pki) as trusted:
        assert await _health(trusted) == health_pb2.HealthCheckResponse.SERVING
    no_certificate = channel_credentials(pki.ca)
    strangers = channel_credentials(pki.ca, pki.stranger_cert, pki.stranger_key)
    assert no_certificate is not None
    assert strangers is not None
    for channel in (
        grpc.aio.insecure_channel(address),  # plaintext to a TLS port
        grpc.aio.secure_channel(address, no_certificate),  # no client certificate
        grpc.aio.secure_channel(address, strangers),  # signed by another CA
    ):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _health(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_canopy_command_speaks_tls(suite: Suite, pki: Pki) -> None:
    async with _secure(suite.permissions_address, pki) as permissions:
        await seed_directory(dgrpc.DirectoryServiceStub(permissions))
    common = ["--integration", suite.integration_address, "--token", token(o_ops="owner")]
    tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    runner = CliRunner()

    def canopy(*args: str) -> Any:
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    listed = await asyncio.to_thread(
        canopy, *common, *tls, "integrations", "list", "--org", "o_ops", "--output", "json"
    )
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout).get("integrations", []) == []
    plaintext = await asyncio.to_thread(canopy, *common, "integrations", "list", "--org", "o_ops")
    assert plaintext.exit_code == 1
    assert "cannot reach the integration service" in plaintext.output
    half = await asyncio.to_thread(
        canopy,
        *common,
        "--tls-ca",
        str(pki.ca),
        "--tls-cert",
        str(pki.cert),
        "integrations",
        "list",
        "--org",
        "o_ops",
    )
    assert half.exit_code == 2
    assert "--tls-cert and --tls-key together" in half.output
