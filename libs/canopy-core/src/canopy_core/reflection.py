"""Server reflection over the default descriptor pool, with RPC methods found as symbols.

grpcurl's `describe package.Service.Method` asks reflection for the file containing the method;
protobuf's upb pool finds messages, fields, enums and services but not methods
(grpc/grpc#34743), so the stock servicer answers NOT_FOUND. The pool below falls back to the
method's service.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection


class MethodSymbolPool:
    """A descriptor pool as reflection reads it, where `package.Service.Method` is a symbol."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        """The file defining `symbol`; KeyError when there is none."""
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(symbol) from None
            if method not in service.methods_by_name:
                raise KeyError(symbol) from None
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)  # every other lookup is the pool's own


def enable_reflection(server: grpc.aio.Server, service_names: list[str]) -> None:
    """Serve `grpc.reflection.v1alpha` for these services (and reflection itself)."""
    reflection.enable_server_reflection(
        [*service_names, reflection.SERVICE_NAME],
        server,
        pool=MethodSymbolPool(descriptor_pool.Default()),
    )
