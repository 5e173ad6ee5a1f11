"""A bare grpc.aio server answering GetConnection with fixed bytes: no interceptor, no token,
no database. The baseline the GetConnection benchmark compares the real service against.

`python -m bench.echo_server` with CANOPY_PORT and ECHO_RESPONSE_FILE (serialized response).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

METHOD = "GetConnection"
SERVICE = "canopy.integration.v1.ConnectionTreeService"


async def main() -> None:
    """Serve until terminated."""
    response = open(os.environ["ECHO_RESPONSE_FILE"], "rb").read()  # noqa: SIM115

    async def get_connection(request: bytes, context: Any) -> bytes:
        return response

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {METHOD: grpc.unary_unary_rpc_method_handler(get_connection, None, None)},
            ),
        )
    )
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['CANOPY_PORT']}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
