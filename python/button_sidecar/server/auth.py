"""Bearer-token authentication of gRPC calls (`authorization: Bearer <token>` metadata)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]

from button_sidecar.config import Secret

# The health service stays open, so orchestrators can probe without the token.
_OPEN_PREFIX = "/grpc.health.v1.Health/"

_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call but health checks with UNAUTHENTICATED unless it carries the token."""

    def __init__(self, token: Secret) -> None:
        self._expected = f"Bearer {token.reveal()}".encode()

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(_OPEN_PREFIX):
            return handler
        values = [v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"]
        if not values:
            return _refusal(handler, "missing 'authorization: Bearer <token>' metadata")
        # Constant-time, so the token cannot be guessed by timing.
        if not hmac.compare_digest(str(values[0]).encode(), self._expected):
            return _refusal(handler, "the bearer token is not valid")
        return handler


def _refusal(handler: Any, message: str) -> Any:
    """A handler of the same shape as `handler` (None for an unknown method) that answers UNAUTHENTICATED."""

    async def refuse(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    shape = (False, False) if handler is None else (handler.request_streaming, handler.response_streaming)
    return _HANDLER_FACTORIES[shape](refuse)
