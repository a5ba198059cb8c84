"""Typed router errors (router-schema §4) and their HTTP / gRPC forms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import grpc

from services.common.pb import router_pb2

SCHEMA_VERSION = "1.1"
SUPPORTED_SCHEMAS = ("1.0", "1.1")
ERROR_METADATA_KEY = "route-error-bin"


class ErrorCode(StrEnum):
    ALIAS_UNKNOWN = "ALIAS_UNKNOWN"
    NO_ROUTE = "NO_ROUTE"
    POLICY_DENY = "POLICY_DENY"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    ROUTER_OVERLOADED = "ROUTER_OVERLOADED"
    UPSTREAM_UNHEALTHY = "UPSTREAM_UNHEALTHY"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNSUPPORTED_SCHEMA = "UNSUPPORTED_SCHEMA"
    INTERNAL = "INTERNAL"


_TRANSPORT: dict[ErrorCode, tuple[int, grpc.StatusCode]] = {
    ErrorCode.ALIAS_UNKNOWN: (404, grpc.StatusCode.NOT_FOUND),
    ErrorCode.NO_ROUTE: (409, grpc.StatusCode.FAILED_PRECONDITION),
    ErrorCode.POLICY_DENY: (403, grpc.StatusCode.PERMISSION_DENIED),
    ErrorCode.BUDGET_EXCEEDED: (409, grpc.StatusCode.FAILED_PRECONDITION),
    ErrorCode.ROUTER_OVERLOADED: (503, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ErrorCode.UPSTREAM_UNHEALTHY: (502, grpc.StatusCode.UNAVAILABLE),
    ErrorCode.INVALID_REQUEST: (400, grpc.StatusCode.INVALID_ARGUMENT),
    ErrorCode.UNSUPPORTED_SCHEMA: (409, grpc.StatusCode.FAILED_PRECONDITION),
    ErrorCode.INTERNAL: (500, grpc.StatusCode.INTERNAL),
}


@dataclass
class RouteFailure(Exception):
    """Raised anywhere in planning; becomes a `RouteError` at the transport edge."""

    code: ErrorCode
    message: str
    retry_hint_ms: int | None = None
    supported: Sequence[str] = ()

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def http_status(self) -> int:
        return _TRANSPORT[self.code][0]

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return _TRANSPORT[self.code][1]

    @property
    def retry_after_seconds(self) -> int | None:
        if self.retry_hint_ms is None:
            return None
        return max(1, math.ceil(self.retry_hint_ms / 1000))

    def to_proto(self, *, request_id: str | None, policy_rev: str | None) -> router_pb2.RouteError:
        error = router_pb2.RouteError(
            schema_version=SCHEMA_VERSION,
            code=self.code.value,
            message=self.message,
            supported=list(self.supported),
        )
        if request_id:
            error.request_id = request_id
        if policy_rev:
            error.policy_rev = policy_rev
        if self.retry_hint_ms is not None:
            error.retry_hint_ms = self.retry_hint_ms
        return error


def invalid(message: str) -> RouteFailure:
    return RouteFailure(ErrorCode.INVALID_REQUEST, message)
