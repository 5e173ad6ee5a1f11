"""Reading the errors other Canopy services answer with (the other side of the interceptor)."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2


def error_info(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The `ErrorInfo` reason and metadata of a failed call ("" and {} when it has none);
    works for the errors of sync and asyncio calls alike."""
    trailing: Any = getattr(error, "trailing_metadata", lambda: None)()
    for key, value in trailing or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason, dict(info.metadata)
    return "", {}
