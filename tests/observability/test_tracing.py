"""One request, one trace: edge → keys, router, upstream and analytics, all under the client's
`traceparent`, captured by an in-memory exporter in this process (services in-process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.analytics.app import AnalyticsApp
from services.common import tracing
from tests.analytics.conftest import settings_for, sqlite_url
from tests.edge.conftest import (
    BEARER,
    CHAT,
    RouterFactory,
    edge_settings,
    running_edge,
    running_keys,
)
from tests.mock_upstream.fixture import MockUpstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
PROMPT = CHAT["messages"][0]["content"]
RPCS = (
    "signalbox.keys.v1.Keys/Verify",
    "signalbox.router.v1.Router/Plan",
    "signalbox.analytics.v1.Analytics/Ingest",
)


@asynccontextmanager
async def tracing_with(
    sampler: Sampler, *, capture: bool = False
) -> AsyncIterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider, capture_content=capture)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


@pytest.fixture
def no_tracing_left() -> Iterator[None]:
    yield
    assert not tracing.enabled()


def hexid(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def by_name(spans: Sequence[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name and s.kind == kind]
    return span


def parent_of(span: ReadableSpan) -> str | None:
    return hexid(span.parent.span_id, 16) if span.parent is not None else None


def span_id(span: ReadableSpan) -> str:
    return hexid(span.context.span_id, 16)


def all_attribute_text(spans: Sequence[ReadableSpan]) -> str:
    return " ".join(str(v) for s in spans for v in (s.attributes or {}).values())


async def wait_for_span(exporter: InMemorySpanExporter, name: str, timeout: float = 20.0) -> None:
    """Analytics batches leave the edge in the background (1 s flush): a bounded wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(s.name == name for s in exporter.get_finished_spans()):
        assert loop.time() < deadline, f"no {name} span"
        await asyncio.sleep(0.05)


@pytest.mark.postgres
async def test_one_trace_spans_edge_keys_router_upstream_and_analytics(
    pg_url: str,
    tmp_path: Path,
    router_service: RouterFactory,
    mock_upstream: MockUpstream,
    no_tracing_left: None,
) -> None:
    aliases = {"fast": {"base_url": mock_upstream.base_url, "mode": "chat", "model_id": "mock-a"}}
    async with (
        tracing_with(ALWAYS_ON) as exporter,
        running_keys(pg_url, tmp_path) as keys,
        router_service(aliases) as router,
    ):
        analytics = AnalyticsApp(settings_for(sqlite_url(tmp_path), tmp_path))
        analytics_port = await analytics.start()
        try:
            key = await keys.generate(label="traced")
            settings = edge_settings(
                tmp_path,
                mock_upstream.base_url,
                auth_mode="managed",
                openai_api_key="sk-upstream-secret",
                keys_addr=keys.addr,
                router_addr=router.addr,
                analytics_addr=f"127.0.0.1:{analytics_port}",
            )
            async with running_edge(settings, capture=False) as edge:
                response = await edge.client.post(
                    "/v1/chat/completions",
                    json={**CHAT, "model": "fast"},
                    headers={"authorization": f"Bearer {key.token}", "traceparent": TRACEPARENT},
                )
                assert response.status_code == 200, response.text
                await wait_for_span(exporter, "signalbox.analytics.v1.Analytics/Ingest")
        finally:
            await analytics.stop()
        spans = exporter.get_finished_spans()

    # Background work (key setup, catalog polls, feedback batches) runs in traces of its own.
    spans = [s for s in spans if hexid(s.context.trace_id, 32) == TRACE_ID]
    assert {(s.name, s.kind) for s in spans} >= {
        ("chat fast", SpanKind.SERVER),
        *((rpc, kind) for rpc in RPCS for kind in (SpanKind.CLIENT, SpanKind.SERVER)),
        ("analytics ingest", SpanKind.PRODUCER),
    }
    edge_span = by_name(spans, "chat fast", SpanKind.SERVER)
    assert parent_of(edge_span) == CLIENT_SPAN
    for rpc in RPCS[:2]:
        client = by_name(spans, rpc, SpanKind.CLIENT)
        server = by_name(spans, rpc, SpanKind.SERVER)
        assert parent_of(client) == span_id(edge_span)
        assert parent_of(server) == span_id(client)
        assert server.attributes["signalbox.request_id"] == response.headers["x-request-id"]
    batch = by_name(spans, "analytics ingest", SpanKind.PRODUCER)
    ingest_client = by_name(spans, "signalbox.analytics.v1.Analytics/Ingest", SpanKind.CLIENT)
    ingest_server = by_name(spans, "signalbox.analytics.v1.Analytics/Ingest", SpanKind.SERVER)
    assert parent_of(batch) == span_id(edge_span)
    assert parent_of(ingest_client) == span_id(batch)
    assert parent_of(ingest_server) == span_id(ingest_client)

    attributes = edge_span.attributes
    usage = response.json()["usage"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "fast"
    assert attributes["gen_ai.response.model"] == "mock-a"
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attributes["signalbox.route_id"] == response.headers["x-route-id"]
    assert attributes["signalbox.routing.strategy"] == "alias_table"
    assert attributes["signalbox.routing.selected_model"] == "mock-a"
    assert attributes["signalbox.routing.decision_ms"] > 0
    assert attributes["signalbox.api_key_id"] == key.id
    assert attributes["http.response.status_code"] == 200
    text = all_attribute_text(spans)
    assert PROMPT not in text
    assert key.token not in text and "sk-upstream-secret" not in text

    # The upstream call continues the same trace, as a child of the edge's span.
    [seen] = await mock_upstream.requests()
    assert seen["headers"]["traceparent"] == f"00-{TRACE_ID}-{span_id(edge_span)}-01"


async def test_sampling_off_exports_nothing_but_still_propagates(
    tmp_path: Path, mock_upstream: MockUpstream, no_tracing_left: None
) -> None:
    async with tracing_with(ALWAYS_OFF) as exporter:
        async with running_edge(edge_settings(tmp_path, mock_upstream.base_url)) as edge:
            response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
            assert response.status_code == 200
        assert exporter.get_finished_spans() == ()
    [seen] = await mock_upstream.requests()
    version, trace_id, parent, flags = seen["headers"]["traceparent"].split("-")
    assert version == "00" and len(trace_id) == 32 and parent != "0" * 16
    assert int(flags, 16) & 0x01 == 0  # not sampled, yet the context travels on


async def test_prompt_in_spans_only_when_enabled(
    tmp_path: Path, mock_upstream: MockUpstream, no_tracing_left: None
) -> None:
    for capture in (False, True):
        async with (
            tracing_with(ALWAYS_ON, capture=capture) as exporter,
            running_edge(edge_settings(tmp_path, mock_upstream.base_url)) as edge,
        ):
            response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
            assert response.status_code == 200
            spans = exporter.get_finished_spans()
        assert (PROMPT in all_attribute_text(spans)) is capture


async def test_tracing_off_forwards_the_clients_trace_headers_untouched(
    tmp_path: Path, mock_upstream: MockUpstream
) -> None:
    assert not tracing.enabled()
    async with running_edge(edge_settings(tmp_path, mock_upstream.base_url)) as edge:
        headers = {**BEARER, "traceparent": TRACEPARENT, "tracestate": "vendor=1"}
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status_code == 200
    [seen] = await mock_upstream.requests()
    assert seen["headers"]["traceparent"] == TRACEPARENT
    assert seen["headers"]["tracestate"] == "vendor=1"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_otel_env_asks(env: dict[str, Any], expected: bool) -> None:
    assert tracing.tracing_requested(env) is expected


def test_configure_from_env_installs_and_shuts_down(no_tracing_left: None) -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "custom-name"}
    assert tracing.configure_tracing("keys", env={}) is None
    provider = tracing.configure_tracing("keys", env=env)
    try:
        assert tracing.enabled()
        assert provider.resource.attributes["service.name"] in ("custom-name", "signalbox-keys")
    finally:
        tracing.shutdown()
    with pytest.raises(ValueError, match="unknown exporter"):
        tracing.configure_tracing("keys", env={"OTEL_TRACES_EXPORTER": "zipkin-v9"})


async def test_sampled_out_request_continues_the_clients_trace_and_tracestate(
    tmp_path: Path, mock_upstream: MockUpstream, no_tracing_left: None
) -> None:
    async with tracing_with(ALWAYS_OFF):
        async with running_edge(edge_settings(tmp_path, mock_upstream.base_url)) as edge:
            headers = {**BEARER, "traceparent": TRACEPARENT, "tracestate": "vendor=1"}
            response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert response.status_code == 200
    [seen] = await mock_upstream.requests()
    _version, trace_id, parent, flags = seen["headers"]["traceparent"].split("-")
    assert trace_id == TRACE_ID and parent not in (CLIENT_SPAN, "0" * 16)
    assert int(flags, 16) & 0x01 == 0
    assert seen["headers"]["tracestate"] == "vendor=1"


@pytest.mark.parametrize(
    ("trace_id", "span_id_", "flags", "state"),
    [
        (int(TRACE_ID, 16), int(CLIENT_SPAN, 16), 0x01, [("vendor", "1"), ("other", "x")]),
        (1, 2, 0x00, []),  # leading zeros kept, no tracestate header
        (2**128 - 1, 2**64 - 1, 0x03, []),
    ],
)
def test_trace_headers_are_what_the_w3c_propagator_writes(
    trace_id: int, span_id_: int, flags: int, state: list[tuple[str, str]]
) -> None:
    context = SpanContext(
        trace_id,
        span_id_,
        is_remote=False,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState(state),
    )
    expected: dict[str, str] = {}
    propagated = set_span_in_context(NonRecordingSpan(context))
    TraceContextTextMapPropagator().inject(expected, context=propagated)
    assert tracing.trace_headers(context) == expected
