"""CORS is closed by default and opens only to configured origins (issue 10)."""

from __future__ import annotations

from tests.edge.conftest import EdgeFactory

PREFLIGHT = {
    "origin": "https://app.example",
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


async def test_no_cors_headers_by_default(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        preflight = await edge.client.options("/v1/chat/completions", headers=PREFLIGHT)
        plain = await edge.client.get("/_health/live", headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in plain.headers


async def test_configured_origin_is_allowed_and_others_are_not(make_edge: EdgeFactory) -> None:
    async with make_edge(cors_origins="https://app.example, https://other.example") as edge:
        allowed = await edge.client.options("/v1/chat/completions", headers=PREFLIGHT)
        refused = await edge.client.options(
            "/v1/chat/completions", headers={**PREFLIGHT, "origin": "https://evil.example"}
        )
        simple = await edge.client.get("/_health/live", headers={"origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert "x-request-id" in simple.headers["access-control-expose-headers"]
