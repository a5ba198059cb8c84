"""SSRF guard: router plans may not point the edge (and its provider keys) at internal hosts."""

from __future__ import annotations

import pytest

from services.edge.upstream import Target
from services.edge.upstream_guard import Allowlist, UpstreamGuard
from tests.edge.conftest import BEARER, CHAT, EdgeFactory, RouterFactory
from tests.edge.test_errors import assert_error
from tests.edge.test_router import alias
from tests.mock_upstream.fixture import MockUpstream


def target(base_url: str, auth_env: str | None = None) -> Target:
    return Target(base_url, "chat", "m", auth_env, {}, None)


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        ("http://169.254.169.254/latest", "internal address 169.254.169.254"),
        ("http://[fe80::1]/v1", "internal address fe80::1"),
        ("http://10.1.2.3:8000/v1", "internal address 10.1.2.3"),
        ("http://192.168.0.5/v1", "internal address 192.168.0.5"),
        ("http://127.0.0.1:9/v1", "internal address 127.0.0.1"),
        ("http://[::ffff:169.254.169.254]/v1", "internal address ::ffff:a9fe:a9fe"),
        ("http://localhost:9/v1", "internal address"),
        ("http://metadata.google.internal/computeMetadata/v1", "metadata host"),
        ("file:///etc/passwd", "base_url is not an http(s) URL"),
        ("http://no-such-host.invalid/v1", "host does not resolve"),
    ],
)
async def test_internal_and_odd_upstreams_are_refused(base_url: str, reason: str) -> None:
    refusal = await UpstreamGuard(Allowlist.parse(None)).refusal(target(base_url))
    assert refusal is not None and refusal.startswith(reason)


async def test_public_allowlisted_and_configured_hosts_pass() -> None:
    guard = UpstreamGuard(
        Allowlist.parse("10.0.0.0/8, *.internal.example, vllm", ["http://127.0.0.1:8099/v1"])
    )
    for base_url in (
        "https://93.184.216.34/v1",  # public literal
        "http://10.9.8.7:8000/v1",  # allow-listed CIDR
        "http://gpu.internal.example/v1",  # allow-listed suffix
        "http://vllm:8000/v1",  # allow-listed name (not resolved)
        "http://127.0.0.1:5555/v1",  # host of the edge's own OPENAI_BASE_URL
    ):
        assert await guard.refusal(target(base_url)) is None, base_url


async def test_a_plan_cannot_borrow_signalbox_secrets_as_its_provider_key() -> None:
    guard = UpstreamGuard(Allowlist.parse(None))
    refusal = await guard.refusal(target("https://93.184.216.34/v1", "SIGNALBOX_ADMIN_TOKEN"))
    assert refusal == "auth_env names a Signalbox setting"
    assert await guard.refusal(target("https://93.184.216.34/v1", "GROQ_API_KEY")) is None


async def test_refused_targets_are_skipped_in_order() -> None:
    guard = UpstreamGuard(Allowlist.parse(None))
    targets = [target("http://169.254.169.254/v1"), target("https://93.184.216.34/v1")]
    assert await guard.permitted(targets) == targets[1:]


async def test_router_plan_to_the_metadata_service_is_refused(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"evil": alias("http://169.254.169.254/latest/meta-data", "m")}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "evil"}, headers=BEARER
        )
    assert_error(response, 502, "upstream_not_allowed", "upstream_error")
    assert await mock_upstream.requests() == []
    [event] = edge.events
    assert event["response"]["status_code"] == 502
