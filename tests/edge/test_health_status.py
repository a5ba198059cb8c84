"""Health (http-api §7) and status (§6) against real dependencies."""

from __future__ import annotations

from tests.edge.conftest import EdgeFactory, RunningKeys
from tests.mock_upstream.fixture import closed_port_url


async def test_live_and_health(make_edge: EdgeFactory) -> None:
    async with make_edge(keys_addr=closed_port_url()[7:-3]) as edge:
        live = await edge.client.get("/_health/live")
        health = await edge.client.get("/health")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert live.headers["x-request-id"].startswith("req_")


async def test_ready_skips_disabled_dependencies(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.get("/_health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert {checks[n]["status"] for n in ("router", "keys", "analytics", "redis")} == {"skipped"}
    assert checks["database"]["status"] == "ok"
    assert checks["database"]["latency_ms"] >= 0


async def test_ready_with_postgres_redis_and_keys(
    make_edge: EdgeFactory, pg_url: str, redis_url: str, keys_service: RunningKeys
) -> None:
    async with make_edge(
        database_url=pg_url, redis_url=redis_url, keys_addr=keys_service.addr
    ) as edge:
        response = await edge.client.get("/_health/ready")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok"
    assert checks["keys"]["status"] == "ok"


async def test_ready_is_503_when_a_dependency_is_down(make_edge: EdgeFactory) -> None:
    async with make_edge(keys_addr=closed_port_url()[7:-3]) as edge:
        response = await edge.client.get("/_health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["keys"]["status"] == "error"
    assert body["checks"]["keys"]["error"]


async def test_ready_is_503_while_draining(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        edge.app.state.lifecycle.draining = True
        response = await edge.client.get("/_health/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"


async def test_status_document(make_edge: EdgeFactory) -> None:
    async with make_edge(
        auth_mode="managed", openai_api_key="sk-secret-provider", router_strict=True
    ) as edge:
        response = await edge.client.get("/status")
    assert response.status_code == 200
    status = response.json()
    assert "sk-secret-provider" not in response.text
    assert status["name"] == "signalbox"
    assert status["proxy_enabled"] is True
    assert "/v1/chat/completions" in status["routes"]
    assert status["router"] == {
        "enabled": False,
        "mode": "off",
        "addr": None,
        "strict": True,
        "timeout_ms": 250,
        "cache_ttl_ms": 15000,
        "privacy_mode": "features_only",
        "policy_rev": None,
        "catalog_revision": None,
    }
    assert status["features"]["auth"] == {
        "mode": "managed",
        "managed": True,
        "openai_key_present": True,
        "key_store_available": False,
    }
    assert status["features"]["analytics"] == {"enabled": False, "stats": None}
    assert status["features"]["pricing"]["source"] == "built_in"
    assert status["features"]["pricing"]["models_count"] >= 7


async def test_edge_starts_with_postgres_down_and_reports_not_ready(make_edge: EdgeFactory) -> None:
    down = "postgresql://postgres@" + closed_port_url()[7:-3] + "/signalbox"
    async with make_edge(database_url=down) as edge:
        live = await edge.client.get("/_health/live")
        ready = await edge.client.get("/_health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["status"] == "error"
