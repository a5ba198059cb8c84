"""deploy/nginx/nginx.conf under the real nginx binary, in front of real local upstreams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import httpx
import pytest

from tests.deploy.nginx_harness import LocalNginx, render_nginx_conf, run_nginx
from tests.deploy.upstream_app import StreamRun, UpstreamState, serve_upstream

MB = 1024 * 1024
# What a careless parent config does to SSE: buffered proxying plus compression of event streams
# (with buffering alone nginx 1.22 still forwards each small read; gzip then holds them back).
BUFFERED_AND_COMPRESSED = {
    "proxy_buffering off;": "proxy_buffering on;",
    "gzip off;": "gzip on; gzip_types text/event-stream; gzip_min_length 0;",
}


@pytest.fixture
async def proxied(free_port: Callable[[], int]) -> AsyncIterator[Callable]:
    """Factory: start `count` upstreams and nginx in front of them (with optional config edits)."""
    async with AsyncExitStack() as stack:

        async def start(
            count: int = 1, edit: dict[str, str] | None = None
        ) -> tuple[LocalNginx, list[UpstreamState]]:
            states = [UpstreamState(name=f"upstream-{i}") for i in range(count)]
            addrs = []
            for state in states:
                port = free_port()
                await stack.enter_async_context(serve_upstream(state, port))
                addrs.append(f"127.0.0.1:{port}")
            nginx = await stack.enter_async_context(run_nginx(addrs, free_port(), edit=edit))
            return nginx, states

        yield start


async def _stream_through(
    nginx: LocalNginx, state: UpstreamState, *, events: int, ack_wait: float, accel: bool
) -> tuple[StreamRun, list[str], httpx.Headers]:
    """Read the SSE stream via nginx, confirming each event to the upstream as it arrives."""
    run_id = uuid.uuid4().hex
    run = state.runs[run_id] = StreamRun(events=events, ack_wait=ack_wait)
    params = {"run": run_id, **({"accel": "no"} if accel else {})}
    received: list[str] = []
    async with (
        httpx.AsyncClient(base_url=nginx.url, timeout=30) as client,
        client.stream("GET", "/v1/stream", params=params) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                received.append(line.removeprefix("data: "))
                run.confirm(len(received) - 1)
        return run, received, response.headers


def _each_event_arrived_before_the_next_was_sent(run: StreamRun) -> bool:
    return all(run.received_at[i] < run.sent_at[i + 1] for i in range(run.events - 1))


async def test_sse_events_pass_through_one_at_a_time(proxied: Callable) -> None:
    nginx, (state,) = await proxied()
    run, received, headers = await _stream_through(
        nginx, state, events=5, ack_wait=10.0, accel=False
    )

    assert received == [f"event {i}" for i in range(5)]
    assert run.unconfirmed == []  # the upstream never had to give up waiting for a delivery
    assert _each_event_arrived_before_the_next_was_sent(run)
    assert headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in headers


async def test_buffering_proxy_is_detected_by_the_same_measurement(proxied: Callable) -> None:
    """Control: the measurement does catch a proxy that holds events back."""
    nginx, (state,) = await proxied(edit=BUFFERED_AND_COMPRESSED)
    run, received, _ = await _stream_through(nginx, state, events=3, ack_wait=0.5, accel=False)

    assert received == [f"event {i}" for i in range(3)]
    assert run.unconfirmed, "every event was confirmed in time although nginx buffered"
    assert not _each_event_arrived_before_the_next_was_sent(run)


async def test_x_accel_buffering_no_keeps_stream_live_under_inherited_buffering(
    proxied: Callable,
) -> None:
    """http-api §10: the app's `X-Accel-Buffering: no` wins over an inherited buffered setup."""
    nginx, (state,) = await proxied(edit=BUFFERED_AND_COMPRESSED)
    run, received, _ = await _stream_through(nginx, state, events=4, ack_wait=10.0, accel=True)

    assert received == [f"event {i}" for i in range(4)]
    assert run.unconfirmed == []
    assert _each_event_arrived_before_the_next_was_sent(run)


async def test_body_limit_is_20_mib(proxied: Callable) -> None:
    nginx, (state,) = await proxied()
    async with httpx.AsyncClient(base_url=nginx.url, timeout=60) as client:
        accepted = await client.post("/v1/upload", content=b"x" * (19 * MB))
        refused = await client.post("/v1/upload", content=b"x" * (21 * MB))

    assert accepted.status_code == 200
    assert accepted.json() == {"bytes": 19 * MB}
    assert refused.status_code == 413
    assert state.uploads == [19 * MB]  # the oversized body never reached the upstream


async def test_health_routes(proxied: Callable) -> None:
    nginx, _ = await proxied()
    async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
        own = await client.get("/_nginx/health")
        edge = await client.get("/health")

    assert own.status_code == 200
    assert own.headers["content-type"] == "application/json"
    assert own.json() == {"status": "ok"}
    assert edge.status_code == 200
    assert edge.json() == {"status": "ok"}  # served by the upstream, not by nginx


async def test_upstream_sees_http11_keepalive_and_forwarded_for(proxied: Callable) -> None:
    nginx, (state,) = await proxied()
    async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
        for _ in range(3):
            response = await client.get(
                "/v1/echo", headers={"X-Forwarded-For": "203.0.113.7", "Connection": "close"}
            )
            assert response.status_code == 200

    assert [s["http_version"] for s in state.seen] == ["1.1"] * 3
    assert all(s["x-forwarded-for"] == "203.0.113.7, 127.0.0.1" for s in state.seen)
    assert all(s.get("connection", "") != "close" for s in state.seen)
    assert all(s["x-forwarded-proto"] == "http" for s in state.seen)
    # One pooled upstream connection served every request.
    assert len({s["peer"] for s in state.seen}) == 1


async def test_requests_are_spread_over_every_upstream_server(proxied: Callable) -> None:
    nginx, _ = await proxied(count=2)
    async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
        names = [(await client.get("/v1/echo")).json()["upstream"] for _ in range(4)]

    assert sorted(set(names)) == ["upstream-0", "upstream-1"]


def test_render_refuses_missing_or_unknown_values() -> None:
    template = "listen ${SIGNALBOX_NGINX_LISTEN}; pid ${SIGNALBOX_NGINX_RUN_DIR}/x;"
    values = {"SIGNALBOX_NGINX_LISTEN": "80", "SIGNALBOX_NGINX_RUN_DIR": "/r"}
    assert render_nginx_conf(template, values) == "listen 80; pid /r/x;"
    with pytest.raises(ValueError, match="template needs"):
        render_nginx_conf(template, {"SIGNALBOX_NGINX_LISTEN": "80"})
    with pytest.raises(ValueError, match="template needs"):
        render_nginx_conf(
            template,
            {
                "SIGNALBOX_NGINX_LISTEN": "80",
                "SIGNALBOX_NGINX_RUN_DIR": "/r",
                "SIGNALBOX_NGINX_OTHER": "x",
            },
        )
