"""Admin auth (http-api §1) and the reload registry (§9), through the real app."""

from __future__ import annotations

from services.edge.errors import ApiError
from tests.edge.conftest import EdgeFactory

ADMIN = "a" * 16 + "B" * 16 + "-admin"


def _code(response) -> str:  # type: ignore[no-untyped-def]
    return response.json()["error"]["code"]


async def test_admin_disabled_without_a_token(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post("/reload/all", headers={"authorization": "Bearer x"})
    assert (response.status_code, _code(response)) == (401, "admin_disabled")
    assert response.json()["error"]["type"] == "authentication_error"


async def test_missing_and_wrong_admin_tokens_are_told_apart(make_edge: EdgeFactory) -> None:
    async with make_edge(admin_token=ADMIN) as edge:
        missing = await edge.client.post("/reload/all")
        wrong = await edge.client.post(
            "/reload/all", headers={"authorization": "Bearer " + "x" * 40}
        )
    assert (missing.status_code, _code(missing)) == (401, "missing_admin_token")
    assert (wrong.status_code, _code(wrong)) == (401, "invalid_admin_token")


async def test_reload_all_reports_each_reloader_and_never_fails(make_edge: EdgeFactory) -> None:
    async def good() -> dict:
        return {"success": True, "message": "reloaded"}

    async def bad() -> dict:
        raise ApiError(500, "config_invalid", "line 1: not JSON")

    auth = {"authorization": f"Bearer {ADMIN}"}
    async with make_edge(admin_token=ADMIN) as edge:
        reloads = edge.runtime.reloads
        reloads.register("good", good)
        reloads.register("bad", bad)
        everything = await edge.client.post("/reload/all", headers=auth)
        one_bad = await edge.client.post("/reload/bad", headers=auth)
        unknown = await edge.client.post("/reload/nothing", headers=auth)
    assert everything.status_code == 200
    assert everything.json()["good"] == {"success": True, "message": "reloaded"}
    assert everything.json()["bad"]["success"] is False
    assert everything.json()["bad"]["code"] == "config_invalid"
    assert (one_bad.status_code, _code(one_bad)) == (500, "config_invalid")
    assert unknown.status_code == 404
