"""Reading the errors other Canopy services answer with (the other side of the interceptor)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def error_info(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The `ErrorInfo` reason and metadata of a failed call ("" and {} when it has none)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason, dict(info.metadata)
    return "", {}
