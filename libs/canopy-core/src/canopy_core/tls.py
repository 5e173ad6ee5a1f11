"""TLS for the channels that call Canopy services (the services' own calls and the CLI's)."""

from __future__ import annotations

from pathlib import Path

import grpc


def channel_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials | None:
    """TLS to a service whose certificate `ca_file` signed, presenting `cert_file`/`key_file`
    as the client certificate when both are given (for a service that requires one: mTLS).
    None, for a plaintext channel, without a CA."""
    if ca_file is None:
        return None
    identity = cert_file is not None and key_file is not None
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes(),
        private_key=key_file.read_bytes() if identity and key_file else None,
        certificate_chain=cert_file.read_bytes() if identity and cert_file else None,
    )
