"""OpenTelemetry tracing for every service: off by default, one trace per request across gRPC.

Configuration is the standard `OTEL_*` environment (read by the SDK itself):

- tracing is on when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or, with it
  unset, when `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set;
  `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off;
- `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` pick the sampler (default
  `parentbased_always_on`), `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` the resource,
  `OTEL_EXPORTER_OTLP_*` the OTLP/gRPC exporter, `OTEL_BSP_*` the batch processor;
- `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` lets prompts into spans (never
  otherwise).

Propagation is W3C trace context: the client interceptors put `traceparent` in the gRPC metadata;
the server interceptor takes it from there or, failing that, from a request's Schema 1.1 `trace`
field. With tracing off no interceptor is installed and no span object is ever created.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common import logging as common_logging
from services.common import metrics
from services.common.logging import request_id_var

log = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
REQUEST_ID_METADATA = "x-request-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_REMEMBERED_EVENTS = 10_000
INSTRUMENTATION_NAME = "signalbox"

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_PARENT = otel_context.Context()  # immutable: every derived context is a copy


class _State:
    tracer: trace.Tracer | None = None
    provider: Any = None
    capture_content: bool = False


_state = _State()
# event id -> the context of the request that produced it (for the analytics batch span).
_event_contexts: OrderedDict[str, trace.SpanContext] = OrderedDict()


# -- configuration ---------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard OTEL_* variables ask for trace export (off when none is set)."""
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    found: list[Any] = []
    for name in filter(None, names):
        if name == "otlp":
            protocol = env.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            )
            if protocol.strip().lower() != "grpc":
                raise ValueError(f"OTLP protocol {protocol!r} is not supported; use grpc")
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}")
    return found


def configure_tracing(service: str, env: Mapping[str, str] = os.environ) -> Any:
    """Install a TracerProvider exporting per OTEL_*; None (and nothing installed) when off."""
    if not tracing_requested(env):
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"signalbox-{service}"}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for exporter in _exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider, capture_content=_truthy(env.get(CAPTURE_CONTENT_ENV)))
    log.info(
        "tracing on",
        extra={
            "service": str(resource.attributes.get(SERVICE_NAME)),
            "sampler": type(provider.sampler).__name__,
        },
    )
    return provider


def install(provider: Any, *, capture_content: bool = False) -> None:
    """Use `provider` (a TracerProvider; None turns tracing off) for every later span.

    Channels and servers opened afterwards get the tracing interceptors; tests install an
    in-memory exporter's provider this way.
    """
    _state.provider = provider
    _state.tracer = provider.get_tracer(INSTRUMENTATION_NAME) if provider is not None else None
    _state.capture_content = capture_content and provider is not None
    common_logging.set_trace_id_source(current_ids if provider is not None else None)
    _event_contexts.clear()


def shutdown() -> None:
    """Flush and stop the installed provider (end of process)."""
    provider = _state.provider
    install(None)
    if provider is not None and hasattr(provider, "shutdown"):
        provider.shutdown()


def enabled() -> bool:
    return _state.tracer is not None


def tracer() -> trace.Tracer | None:
    return _state.tracer


def capture_content() -> bool:
    return _state.capture_content


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span in hex, for log lines; None outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return _PROPAGATOR.extract(carrier)


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's `traceparent`/`tracestate` from HTTP headers (`in` first: a missing key
    costs Starlette's `Headers.get` a raised KeyError)."""
    return {name: headers[name] for name in (TRACEPARENT, TRACESTATE) if name in headers}


def extract_headers(headers: Mapping[str, str]) -> otel_context.Context:
    """The client's trace context; without `traceparent` an empty context (a new trace)."""
    if TRACEPARENT not in headers:
        return _NO_PARENT
    return _PROPAGATOR.extract(forwarded(headers))


def trace_headers(span_context: trace.SpanContext) -> dict[str, str]:
    """W3C `traceparent` (and `tracestate`) of a valid span context, as the propagator writes
    them (tested), without its current-span lookup and carrier setter: the edge formats its
    request span's once, for the router's `trace` field and the upstream headers."""
    c = span_context
    # %-formatting: half the cost of an f-string's format specs for the 128-bit id.
    traceparent = "00-%032x-%016x-%02x" % (c.trace_id, c.span_id, c.trace_flags)  # noqa: UP031
    carrier = {TRACEPARENT: traceparent}
    if c.trace_state:
        carrier[TRACESTATE] = c.trace_state.to_header()
    return carrier


# -- analytics batches -----------------------------------------------------------------------


def remember_event(event_id: str, span_context: trace.SpanContext) -> None:
    """Keep the request's context for its analytics event until a batch sends it (bounded)."""
    _event_contexts[event_id] = span_context
    while len(_event_contexts) > MAX_REMEMBERED_EVENTS:
        _event_contexts.popitem(last=False)


@contextmanager
def batch_span(name: str, event_ids: Sequence[str]) -> Iterator[None]:
    """A span for one batch of analytics events: child of the first event's request trace,
    linked to the others' (a batch serves many traces; the first one owns the span)."""
    tracer_ = _state.tracer
    if tracer_ is None:
        yield
        return
    contexts = [c for c in (_event_contexts.pop(i, None) for i in event_ids) if c is not None]
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0])) if contexts else None
    links = [Link(c) for c in contexts[1:]]
    with tracer_.start_as_current_span(
        name, context=parent, kind=SpanKind.PRODUCER, links=links
    ) as span:
        span.set_attribute("messaging.batch.message_count", len(event_ids))
        yield


# -- gRPC client -----------------------------------------------------------------------------


def _split_method(method: str) -> tuple[str, str]:
    service, _, name = method.strip("/").partition("/")
    return service, name


def _rpc_attributes(method: str) -> dict[str, str]:
    service, name = _split_method(method)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


class _ClientSpans:
    """A CLIENT span per call, its context injected as `traceparent` metadata."""

    def _start(self, details: grpc.aio.ClientCallDetails) -> tuple[Any, grpc.aio.ClientCallDetails]:
        assert _state.tracer is not None
        method = _method_name(details)
        span = _state.tracer.start_span(
            method.strip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
        )
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            metadata.add(key, value)
        request_id = request_id_var.get()
        if request_id is not None and REQUEST_ID_METADATA not in metadata:
            metadata.add(REQUEST_ID_METADATA, request_id)
        return span, details._replace(metadata=metadata)

    @staticmethod
    def _end(span: Any, code: grpc.StatusCode, details: str | None = None) -> None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, details or code.name))
        span.end()

    async def _unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        if _state.tracer is None:
            return await continuation(details, request)
        span, details = self._start(details)
        try:
            call = await continuation(details, request)
            code = await call.code()
            self._end(span, code, await call.details())
        except grpc.aio.AioRpcError as exc:
            self._end(span, exc.code(), exc.details())
            raise
        except BaseException:
            self._end(span, grpc.StatusCode.CANCELLED)
            raise
        return call

    async def _stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        if _state.tracer is None:
            return await continuation(details, request)
        span, details = self._start(details)
        try:
            call = await continuation(details, request)
        except BaseException:
            self._end(span, grpc.StatusCode.CANCELLED)
            raise
        call.add_done_callback(lambda _call: span.end())
        return call


class _UnaryUnarySpans(_ClientSpans, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
        return await self._unary(continuation, details, request)


class _StreamUnarySpans(_ClientSpans, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[override]
        return await self._unary(continuation, details, request_iterator)


class _UnaryStreamSpans(_ClientSpans, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
        return await self._stream(continuation, details, request)


class _StreamStreamSpans(_ClientSpans, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[override]
        return await self._stream(continuation, details, request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The tracing interceptors for a new channel; none while tracing is off."""
    if _state.tracer is None:
        return []
    return [_UnaryUnarySpans(), _StreamUnarySpans(), _UnaryStreamSpans(), _StreamStreamSpans()]


# -- gRPC server -----------------------------------------------------------------------------


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("latin-1")
    return None


def _trace_carrier(metadata: Any, request: Any) -> dict[str, str]:
    """`traceparent` from the metadata, else from a Schema 1.1 `trace` field of the request."""
    carrier = {}
    for key in (TRACEPARENT, TRACESTATE):
        value = _metadata_value(metadata, key)
        if value:
            carrier[key] = value
    if TRACEPARENT not in carrier:
        field = getattr(request, "trace", None)
        if field is not None and request.HasField("trace") and field.HasField("traceparent"):
            carrier[TRACEPARENT] = field.traceparent
            if field.HasField("tracestate"):
                carrier[TRACESTATE] = field.tracestate
    return carrier


def _request_id(metadata: Any, request: Any) -> str | None:
    value = _metadata_value(metadata, REQUEST_ID_METADATA)
    if value:
        return value
    field = getattr(request, "request_id", None)
    return field if isinstance(field, str) and field else None


@contextmanager
def _served(method: str, context: Any, request: Any) -> Iterator[None]:
    """Metrics, request id and (when on) the SERVER span of one gRPC call."""
    started = time.perf_counter()
    metadata = context.invocation_metadata()
    request_id = _request_id(metadata, request)
    rid_token = request_id_var.set(request_id) if request_id else None
    span = ctx_token = None
    if _state.tracer is not None:
        parent = extract(_trace_carrier(metadata, request))
        span = _state.tracer.start_span(
            method.strip("/"), context=parent, kind=SpanKind.SERVER,
            attributes=_rpc_attributes(method),
        )  # fmt: skip
        if request_id:
            span.set_attribute("signalbox.request_id", request_id)
        ctx_token = otel_context.attach(trace.set_span_in_context(span, parent))
    failed: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failed = exc
        raise
    finally:
        code = _code_name(context, failed)
        metrics.GRPC_HANDLED.labels(method, code).inc()
        metrics.GRPC_DURATION.labels(method).observe(time.perf_counter() - started)
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
            if code != "OK":
                span.set_status(Status(StatusCode.ERROR, code))
            span.end()
            otel_context.detach(ctx_token)
        if rid_token is not None:
            request_id_var.reset(rid_token)


def _code_name(context: Any, failed: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if failed is None:
        return "OK"
    return "CANCELLED" if isinstance(failed, asyncio.CancelledError) else "UNKNOWN"


def _wrap_unary_response(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def serve(request: Any, context: Any) -> Any:
        with _served(method, context, request):
            return await behavior(request, context)

    return serve


def _wrap_stream_response(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            with _served(method, context, request):
                async for item in behavior(request, context):
                    yield item

        return stream
    return _wrap_unary_response(method, behavior)


class TelemetryServerInterceptor(grpc.aio.ServerInterceptor):
    """Per call: `signalbox_grpc_server_*` metrics, the request id for logs, the SERVER span."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith("/grpc."):
            return handler  # unknown methods, health and reflection stay unmeasured
        method = details.method
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            serve = _wrap_unary_response(method, handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(serve, **kwargs)
        if handler.stream_unary is not None:
            serve = _wrap_unary_response(method, handler.stream_unary)
            return grpc.stream_unary_rpc_method_handler(serve, **kwargs)
        if handler.unary_stream is not None:
            serve = _wrap_stream_response(method, handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(serve, **kwargs)
        serve = _wrap_stream_response(method, handler.stream_stream)
        return grpc.stream_stream_rpc_method_handler(serve, **kwargs)


@contextmanager
def process_telemetry(service: str, metrics_bind: str | None = None) -> Iterator[None]:
    """For a service's `main`: tracing per OTEL_*, the metrics port per `metrics_bind`, both
    flushed and closed when the process is done."""
    configure_tracing(service)
    server = metrics.serve_metrics(metrics_bind, service) if metrics_bind is not None else None
    try:
        yield
    finally:
        if server is not None:
            server.close()
        shutdown()
