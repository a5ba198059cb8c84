"""The inference pipeline of `/v1/chat/completions` and `/v1/responses` (http-api §3).

Order (normative): size and JSON → auth → scopes → plan → limits/overlays → attempts with
fallbacks → relay. Every exit, errors included, produces exactly one analytics event.
A streaming status is committed only once an attempt has produced its first body byte.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.common.backends import parse_backends
from services.edge.auth import AuthContext, Authenticator
from services.edge.codec import Codec, StreamRelay, codec_for, translation_error
from services.edge.errors import ApiError, invalid_request
from services.edge.events import CostTable, RequestRecord, build_event, parse_usage
from services.edge.limits import Limiter
from services.edge.mcp import McpManager
from services.edge.plan_apply import apply_plan, enforce_plan
from services.edge.response_store import ResponseStore, ResponseTurn
from services.edge.route_request import build_route_request, parse_routing_headers
from services.edge.routing import Planner, PlanResult, in_scope_targets
from services.edge.settings import EdgeSettings, IpNetwork
from services.edge.system_prompt import SystemPrompts
from services.edge.telemetry import EdgeTelemetry
from services.edge.translate import SSEParser, SSEProtocolError, TranslationError
from services.edge.upstream import (
    AttemptFailed,
    OpenAttempt,
    Target,
    open_first,
    plan_targets,
    provider_credential,
)
from services.edge.upstream_client import UpstreamClient
from services.edge.upstream_guard import Allowlist, UpstreamGuard
from services.keys.scopes import MODELS_PREFIX, check_scopes

log = logging.getLogger(__name__)

Api = Literal["chat", "responses"]
EventSink = Callable[[dict[str, Any]], None]

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}
KEEP_ALIVE = b": keep-alive\n\n"
CLIENT_DISCONNECTED = "client_disconnected"
_RESERVED_UPSTREAM_HEADERS = frozenset(
    {"authorization", "content-type", "content-length", "host", "accept"}
)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The raw body, refusing (413) as soon as it is known to exceed `limit` bytes and (408)
    when it has not fully arrived within `timeout_s`: a slowloris client holds no slot long."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"Request body not received within {timeout_s:g} s"
        ) from None
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"Request body exceeds {limit} bytes")


def parse_body(raw: bytes, api: Api) -> dict[str, Any]:
    """A JSON object with a `model`; the rest is the upstream's to judge."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_request("Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("'model' is required and must be a non-empty string", "model")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise invalid_request("'stream' must be a boolean", "stream")
    if api == "chat" and not (isinstance(body.get("messages"), list) and body["messages"]):
        raise invalid_request("'messages' must be a non-empty array", "messages")
    return body


def message_count(api: Api, body: Mapping[str, Any]) -> int:
    if api == "chat":
        return len(body["messages"])
    items = body.get("input")
    return len(items) if isinstance(items, list) else int(items is not None)


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers as a dict, a repeated name keeping its first value (as
    Starlette's `Headers.get`): the pipeline's dozen lookups then cost a dict probe each."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}


def client_ip(request: Request, trusted: tuple[IpNetwork, ...]) -> str | None:
    """The peer, or the first untrusted hop of `X-Forwarded-For` when the peer is trusted."""
    peer = request.client.host if request.client else None

    def is_trusted(addr: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded or not is_trusted(peer):
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not is_trusted(hop):
            return hop
    return peer


def upstream_headers(
    target: Target, credential: str | None, trace: Mapping[str, str], *, stream: bool
) -> dict[str, str]:
    """The plan's headers (primary only, never overriding ours), trace context, credentials."""
    headers = {
        k: v for k, v in target.headers.items() if k.lower() not in _RESERVED_UPSTREAM_HEADERS
    }
    headers.update(trace)
    headers["content-type"] = "application/json"
    headers["accept"] = "text/event-stream" if stream else "application/json"
    if credential:
        headers["authorization"] = f"Bearer {credential}"
    return headers


def header_value(value: str) -> str:
    """Client-chosen text (a model name) made safe for a header: visible ASCII, else %-encoded."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%"))


def plan_headers(plan: PlanResult | None, record: RequestRecord) -> dict[str, str]:
    """http-api §3 headers that exist whenever a plan exists, errors included (and the key's
    `x-ratelimit-*` once its limits admitted the request)."""
    headers = dict(record.limits.headers) if record.limits is not None else {}
    if plan is None:
        return headers
    served = record.target.model_id if record.target else plan.plan.upstream.model_id
    headers |= {
        "x-route-id": header_value(plan.plan.route_id),
        "x-resolved-model": header_value(served),
        "router-schema": "1.1",
    }
    if plan.policy_rev:
        headers["x-policy-rev"] = plan.policy_rev
    if plan.route_cache:
        headers["x-route-cache"] = plan.route_cache
    if plan.plan.stickiness.HasField("plan_token"):
        headers["x-signalbox-plan-token"] = plan.plan.stickiness.plan_token
    return headers


def _plan_token(record: RequestRecord) -> str | None:
    if record.plan is None or not record.plan.plan.stickiness.HasField("plan_token"):
        return None
    return record.plan.plan.stickiness.plan_token


class _RelayResponse(StreamingResponse):
    """Runs the session's cleanup however the response ends, even if it never started."""

    def __init__(self, session: _StreamSession, headers: Mapping[str, str]) -> None:
        super().__init__(
            session.body(),
            status_code=session.record.status_code or 200,
            headers=headers,
            media_type="text/event-stream",
        )
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass  # ASGI 2.4 servers report a gone client this way; the event records it
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await self.session.close()


class _StreamSession:
    """One relayed stream: upstream SSE in, client bytes out, keep-alives during silence.

    `close()` is idempotent and always runs: it releases the connection (dropped when the
    body was not read to its end) and emits the event (`client_disconnected` when the stream
    did not end).
    """

    def __init__(
        self,
        opened: OpenAttempt,
        relay: StreamRelay,
        record: RequestRecord,
        *,
        keepalive_s: float,
        on_close: Callable[[RequestRecord], None],
        on_complete: Callable[[StreamRelay], Awaitable[None]] | None = None,
    ) -> None:
        self._on_complete = on_complete
        self.opened = opened
        self.relay = relay
        self.record = record
        self._keepalive_s = keepalive_s
        self._on_close = on_close
        self._ended = False
        self._closed = False

    def _translate(self, parser: SSEParser, chunk: bytes | None) -> bytes:
        if chunk is None:
            return self.relay.finish()
        try:
            return b"".join(self.relay.feed(event) for event in parser.feed(chunk))
        except SSEProtocolError as exc:
            return self.relay.fail(f"invalid upstream stream: {exc}")

    async def _read(self) -> bytes | None:
        """The next upstream chunk (None at its end), or b"" once `keepalive_s` passed
        without one. The read is cancel-safe, so silence costs no task and loses no bytes."""
        keepalive = asyncio.timeout(self._keepalive_s)
        try:
            async with keepalive:
                return await self.opened.next_chunk()
        except TimeoutError:
            if keepalive.expired():
                return b""
            raise

    async def body(self) -> AsyncIterator[bytes]:
        parser = SSEParser()
        chunk: bytes | None = self.opened.first
        while True:
            out = self._translate(parser, chunk)
            if self.relay.finished and self._on_complete is not None:
                # Saved before the terminal event leaves, so a chained next turn finds it.
                await self._on_complete(self.relay)
                self._on_complete = None
            if out:
                self.record.mark_sent(len(out))
                yield out
            if self.relay.finished:
                break
            try:
                while (chunk := await self._read()) == b"":
                    self.record.mark_sent(len(KEEP_ALIVE))
                    yield KEEP_ALIVE
            except (httpx.TransportError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
                out = self.relay.fail(f"upstream stream failed: {reason}")
                self.record.mark_sent(len(out))
                yield out
                break
        self._ended = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.opened.aclose()
        record, relay = self.record, self.relay
        record.upstream_done_at = record.finished_at = time.perf_counter()
        record.usage = parse_usage(relay.usage)
        record.completed = self._ended and relay.error is None
        if not self._ended:
            record.error_message = CLIENT_DISCONNECTED
        elif relay.error is not None:
            record.error_message = relay.error
        self._on_close(record)


class InferenceProxy:
    """Shared by both endpoints; holds the long-lived clients, never per-request state."""

    def __init__(
        self,
        *,
        settings: EdgeSettings,
        authenticator: Authenticator,
        planner: Planner,
        http: UpstreamClient,
        prices: CostTable,
        emit: EventSink | None,
        system_prompts: SystemPrompts | None = None,
        response_store: ResponseStore | None = None,
        limiter: Limiter | None = None,
        mcp: McpManager | None = None,
    ) -> None:
        self._mcp = mcp or McpManager()
        self._limits = limiter
        self._system_prompts = system_prompts or SystemPrompts(None)
        self._response_store = response_store
        self._settings = settings
        self._auth = authenticator
        self._planner = planner
        self._http = http
        self._prices = prices
        self.emit = emit
        rules = parse_backends(settings.backends, settings.upstream_mode)
        trusted = [settings.openai_base_url, *(rule.base_url for rule in rules)]
        self._guard = UpstreamGuard(Allowlist.parse(settings.upstream_allowlist, trusted))
        self._trusted = settings.trusted_networks
        self.inflight = 0
        self.telemetry = EdgeTelemetry(
            prices,
            metrics_enabled=settings.metrics_enabled,
            request_log_enabled=settings.request_log,
        )
        # Called with every finished request (after its end time is stamped), e.g. RouteFeedback.
        self.finish_hooks: list[Callable[[RequestRecord], None]] = []

    async def handle(self, request: Request, api: Api) -> Response:
        headers = header_map(request.scope)
        record = RequestRecord(
            request_id=request.state.request_id,
            endpoint=request.scope["path"],
            method=request.method,
            user_agent=headers.get("user-agent"),
            client_ip=client_ip(request, self._trusted),
        )
        self.inflight += 1
        streaming = False
        scope = self.telemetry.begin(record, headers)
        try:
            response = await self._handle(request, headers, api, record)
            streaming = isinstance(response, _RelayResponse)
            return response
        except ApiError as error:
            return self._error_response(error, record)
        except Exception:
            # A bug still yields its one analytics event and a typed 500, never a trace.
            log.exception("inference request failed", extra={"request_id": record.request_id})
            return self._error_response(
                ApiError(500, "internal_error", "Internal server error"), record
            )
        finally:
            self.telemetry.leave(scope)
            if not streaming:
                self.inflight -= 1

    def _error_response(self, error: ApiError, record: RequestRecord) -> Response:
        record.status_code = error.status
        record.error_message = error.message
        response = error.to_response()
        response.headers.update(plan_headers(record.plan, record))
        response.background = BackgroundTask(self._finish_on_loop, record)
        return response

    async def _finish_on_loop(self, record: RequestRecord) -> None:
        """Starlette runs a sync background callable in a worker thread: ~25 % of the edge's
        CPU in the bench profile, and the sink, limits and hooks are not thread-safe."""
        self._finish(record)

    def _finish(self, record: RequestRecord) -> None:
        """Stamp the end time and hand the event to the sink (which never blocks)."""
        record.finished_at = record.finished_at or time.perf_counter()
        self.telemetry.finish(record)
        for hook in self.finish_hooks:
            hook(record)
        if self._limits is not None:
            self._limits.settle(record)
        if self.emit is None:
            return
        try:
            self.emit(build_event(record, self._prices))
        except Exception:
            log.exception("analytics event dropped", extra={"request_id": record.request_id})

    async def _handle(
        self, request: Request, headers: Mapping[str, str], api: Api, record: RequestRecord
    ) -> Response:
        raw = await read_body(
            request, self._settings.max_body_bytes, self._settings.body_timeout_seconds
        )
        record.size_bytes = len(raw)
        body = parse_body(raw, api)
        record.model = body["model"]
        record.stream = body.get("stream") is True
        record.message_count = message_count(api, body)
        auth = await self._auth.authenticate(headers.get("authorization"))
        record.auth = auth
        self._check_scopes(auth, api, body["model"])
        routing_headers = parse_routing_headers(headers)
        turn = None
        if api == "responses" and self._response_store is not None:
            turn = await ResponseTurn.begin(self._response_store, body)
            routing_headers = turn.routing_headers(routing_headers)
        body = self._system_prompts.apply(api, body)
        body = self._mcp.merge(api, body)
        route_request = build_route_request(
            api=api,
            body=body,
            request_id=record.request_id,
            headers=routing_headers,
            privacy_mode=self._settings.router_privacy_mode,
            key=auth.key,
        )
        self.telemetry.before_plan(route_request, body)
        record.input_tokens = route_request.estimates.prompt_tokens
        if self._limits is not None:
            record.limits = await self._limits.admit(auth.key, route_request)
        record.plan = await self._planner.plan(route_request)
        enforce_plan(record.plan.plan, api, record.input_tokens)
        client_body = apply_plan(api, body, record.plan.plan)
        targets = [t for t in plan_targets(record.plan.plan) if t.mode != "bedrock"]
        targets = in_scope_targets(targets, auth.key.scopes if auth.key else None)
        if turn is not None:
            targets = turn.pin(targets)
        if not targets:
            raise ApiError(
                502, "unsupported_upstream_mode", "Upstream mode 'bedrock' is not supported"
            )
        targets = await self._guard.permitted(targets)
        if not targets:
            raise ApiError(
                502, "upstream_not_allowed", "The plan's upstream is not allowed by this edge"
            )
        return await self._send(headers, api, client_body, targets, auth, record, turn)

    @staticmethod
    def _check_scopes(auth: AuthContext, api: Api, model: str) -> None:
        if auth.key is None:
            return
        missing = check_scopes(list(auth.key.scopes), api, model)
        if missing is not None:
            param = "model" if missing.startswith(MODELS_PREFIX) else None
            raise ApiError(403, "insufficient_scope", f"API key lacks scope {missing}", param=param)

    async def _send(
        self,
        client_headers: Mapping[str, str],
        api: Api,
        client_body: dict[str, Any],
        targets: list[Target],
        auth: AuthContext,
        record: RequestRecord,
        turn: ResponseTurn | None = None,
    ) -> Response:
        stream = record.stream
        prepared: dict[int, tuple[Codec, bool]] = {}
        trace = self.telemetry.upstream_trace_headers(client_headers)

        def build(target: Target) -> tuple[str, bytes, Mapping[str, str]]:
            codec = codec_for(api, target.mode)
            history = turn.history(target.mode) if turn is not None else None
            try:
                upstream_body, wants_usage = codec.prepare(client_body, history)
            except TranslationError as exc:
                raise translation_error(exc) from None
            prepared[id(target)] = (codec, wants_usage)
            credential = provider_credential(
                target,
                passthrough_bearer=auth.bearer,
                openai_api_key=self._settings.openai_api_key,
            )
            headers = upstream_headers(target, credential, trace, stream=stream)
            payload = orjson.dumps({**upstream_body, "model": target.model_id})
            return codec.upstream_path, payload, headers

        limits = record.plan.plan.limits if record.plan else None
        timeout_ms = (
            limits.timeout_ms
            if limits is not None and limits.HasField("timeout_ms")
            else self._settings.upstream_timeout_ms
        )
        try:
            opened = await self._mcp.rounds(api, client_body, open_first)(
                self._http,
                targets,
                build,
                stream=stream,
                timeout_s=timeout_ms / 1000,
                attempts=record.attempts,
            )
        except AttemptFailed as failure:
            record.target = record.attempts.failures[-1][0]
            return self._relay_upstream_error(failure, auth, record)
        record.target = opened.target
        record.upstream_sent_at = opened.sent_at
        if record.attempts.failures:
            log.info(
                "served by a fallback",
                extra={
                    "request_id": record.request_id,
                    "model_id": opened.target.model_id,
                    "errors": record.attempts.errors,
                },
            )
        codec, wants_usage = prepared[id(opened.target)]
        if stream:
            relay = codec.stream(client_body, wants_usage, opened.target.model_id)
            return self._stream_response(opened, relay, record, turn)
        return await self._json_response(opened, codec, client_body, record, turn)

    def _relay_upstream_error(
        self, failure: AttemptFailed, auth: AuthContext, record: RequestRecord
    ) -> Response:
        """A non-429 4xx: relayed as is, except provider auth failures in managed mode."""
        status = failure.status or 502
        if auth.method == "managed" and status in (401, 403):
            raise ApiError(
                502, "upstream_auth_failed", "Upstream rejected the provider credentials"
            )
        try:
            parsed = orjson.loads(failure.body)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            text = failure.body.decode(errors="replace").strip()[:500] or failure.detail
            raise ApiError(status, "upstream_error", f"Upstream error: {text}")
        error = parsed.get("error")
        record.status_code = status
        record.error_message = (
            str(error.get("message")) if isinstance(error, dict) else failure.detail
        )
        record.upstream_done_at = time.perf_counter()
        headers = plan_headers(record.plan, record)
        return Response(
            failure.body,
            status,
            headers,
            media_type="application/json",
            background=BackgroundTask(self._finish_on_loop, record),
        )

    async def _json_response(
        self,
        opened: OpenAttempt,
        codec: Codec,
        client_body: dict[str, Any],
        record: RequestRecord,
        turn: ResponseTurn | None = None,
    ) -> Response:
        record.upstream_done_at = time.perf_counter()
        await opened.aclose()
        try:
            upstream = orjson.loads(opened.first)
        except orjson.JSONDecodeError:
            upstream = None
        if not isinstance(upstream, dict):
            raise ApiError(502, "upstream_invalid_response", "Upstream returned invalid JSON")
        record.usage = parse_usage(upstream.get("usage"))
        answer = upstream
        if codec.response is None:
            content = opened.first
        else:
            try:
                answer = codec.response(upstream, client_body)
            except TranslationError as exc:
                raise translation_error(exc) from None
            content = orjson.dumps(answer)
        if turn is not None:
            await turn.finish(opened.target, answer, _plan_token(record))
        record.status_code = opened.response.status_code
        headers = plan_headers(record.plan, record)
        overhead = record.overhead_ms()
        if overhead is not None:
            headers["x-signalbox-overhead-ms"] = f"{overhead:.3f}"
        cost = self._cost_header(record)
        if cost is not None:
            headers["x-signalbox-cost-usd"] = cost
        record.mark_sent(len(content))
        return Response(
            content,
            record.status_code,
            headers,
            media_type="application/json",
            background=BackgroundTask(self._finish_on_loop, record),
        )

    def _cost_header(self, record: RequestRecord) -> str | None:
        if record.usage is None:
            return None
        model = record.target.model_id if record.target else record.model or ""
        u = record.usage
        cost = self._prices.cost(
            model, u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens
        )
        return f"{cost['total_cost']:.6f}"

    def _stream_response(
        self,
        opened: OpenAttempt,
        relay: StreamRelay,
        record: RequestRecord,
        turn: ResponseTurn | None = None,
    ) -> Response:
        record.status_code = opened.response.status_code
        headers = {**plan_headers(record.plan, record), **SSE_HEADERS}
        overhead = record.overhead_ms()
        if overhead is not None:
            headers["x-signalbox-overhead-ms"] = f"{overhead:.3f}"
        session = _StreamSession(
            opened,
            relay,
            record,
            keepalive_s=self._settings.sse_keepalive_seconds,
            on_close=self._stream_closed,
            on_complete=None
            if turn is None
            else lambda done: turn.finish(opened.target, done.response, _plan_token(record)),
        )
        self.telemetry.stream_opened()
        return _RelayResponse(session, headers)

    def _stream_closed(self, record: RequestRecord) -> None:
        self.inflight -= 1
        self.telemetry.stream_closed()
        self._finish(record)
