"""`GET /status` (http-api §6): every feature's state, config paths, and no secrets."""

from __future__ import annotations

from pathlib import Path

from services.edge.mcp import ServerConfig
from services.edge.mcp.connection import McpConnection
from services.edge.status import package_version
from tests.edge.conftest import EdgeFactory
from tests.mcp_servers.fixture import stdio_server, write_config
from tests.mock_upstream.fixture import closed_port_url

ADMIN = "admin-secret-" + "x" * 30
PROVIDER_KEY = "sk-provider-secret-123"
ENV_SECRET = "mcp-env-secret-456"
HEADER_SECRET = "mcp-header-secret-789"
URL_SECRET = "mcp-url-secret-000"


async def test_status_reports_every_feature_without_secrets(
    tmp_path: Path, make_edge: EdgeFactory
) -> None:
    config = write_config(
        tmp_path / "mcp.json",
        {
            "demo": stdio_server(execute=True, env={"TOKEN": ENV_SECRET}),
            "web": {"url": closed_port_url() + f"/mcp?key={URL_SECRET}",
                    "headers": {"authorization": f"Bearer {HEADER_SECRET}"}},
        },
        execution={"max_rounds": 3},
    )  # fmt: skip
    async with make_edge(
        admin_token=ADMIN,
        openai_api_key=PROVIDER_KEY,
        auth_mode="managed",
        mcp_config=config,
        mcp_connect_timeout_ms=30_000,
        backends="prefix=vllm-,base=http://127.0.0.1:9/v1,mode=chat",
    ) as edge:
        response = await edge.client.get("/status")
    assert response.status_code == 200
    text = response.text
    for secret in (ADMIN, PROVIDER_KEY, ENV_SECRET, HEADER_SECRET, URL_SECRET, "127.0.0.1:9"):
        assert secret not in text, secret
    status = response.json()

    assert status["name"] == "signalbox"
    assert status["version"] == package_version()
    assert status["proxy_enabled"] is True
    for route in ("/v1/chat/completions", "/v1/responses", "/status", "/_health/ready",
                  "/reload/mcp", "/reload/all"):  # fmt: skip
        assert route in status["routes"], route
    assert "/reload/{name}" not in status["routes"]
    assert {"enabled", "mode", "addr", "strict", "timeout_ms", "privacy_mode", "policy_rev"} <= set(
        status["router"]
    )
    assert status["router"]["mode"] == "off"

    features = status["features"]
    assert features["auth"] == {
        "mode": "managed",
        "managed": True,
        "openai_key_present": True,
        "key_store_available": False,
    }
    mcp = features["mcp"]
    assert mcp["enabled"] is True and mcp["reloadable"] is True
    assert mcp["config_path"] == str(config)
    assert mcp["tools_count"] == 6
    assert mcp["execution"] == {"enabled": True, "max_rounds": 3, "servers": ["demo"]}
    servers = {s["name"]: s for s in mcp["servers"]}
    assert servers["demo"] == {
        "name": "demo",
        "transport": "stdio",
        "status": "ok",
        "healthy": True,
        "tools": 6,
        "tool_names": [f"demo_{t}" for t in ("add", "echo", "env", "fail", "grow", "crash")],
        "execute": True,
        "error": None,
    }
    assert servers["web"]["status"] == "error" and servers["web"]["transport"] == "streamable-http"
    assert servers["web"]["tools"] == 0 and servers["web"]["error"]
    assert features["routing"]["stats"]["prefix_rules"] == 1
    assert set(features["routing"]["stats"]) == {
        "aliases", "knn_aliases", "prefix_rules", "catalog_models"
    }  # fmt: skip
    assert features["analytics"] == {"enabled": False, "stats": None}
    assert features["pricing"]["source"] == "built_in" and features["pricing"]["models_count"] > 0
    assert "system_prompt" in features
    assert status["config_paths"]["mcp"] == str(config)
    assert status["config_paths"]["pricing"] is None


async def test_status_without_mcp(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        status = (await edge.client.get("/status")).json()
        ready = (await edge.client.get("/_health/ready")).json()
    assert status["features"]["mcp"] == {
        "enabled": False,
        "config_path": None,
        "reloadable": False,
        "servers": [],
        "tools_count": 0,
        "execution": {"enabled": False, "max_rounds": 5, "servers": []},
    }
    assert ready["checks"]["mcp"] == {"status": "skipped"}


def test_server_errors_quoting_the_url_are_redacted() -> None:
    url = "https://user:pw@mcp.example.com:8443/mcp?token=t0k3n#x"
    connection = McpConnection("web", ServerConfig(url=url), on_change=lambda: None)
    connection._fail(f"Client error '401 Unauthorized' for url '{url}'")
    assert (
        connection.error
        == "Client error '401 Unauthorized' for url 'https://mcp.example.com:8443/mcp'"
    )
    assert connection.state == "error"
