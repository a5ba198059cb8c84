"""`GET /v1/models` (http-api §4) from the router's catalog, read with the official openai SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from services.common.pb import router_pb2
from services.edge.catalog_view import CatalogSnapshot
from services.edge.models_route import model_list
from tests.edge.conftest import BEARER, Edge, EdgeFactory, RouterFactory, RunningKeys
from tests.edge.test_auth import managed
from tests.edge.test_errors import assert_error
from tests.mock_upstream.fixture import MockUpstream

REFERENCE_CATALOG = Path("/work/shared/data/routing/models.json")
MIXTRAL, GPT4 = "mixtral-8x7b-instruct", "gpt-4-1106-preview"


def sdk(edge: Edge, token: str = "client-token") -> openai.AsyncOpenAI:
    """The official client, speaking HTTP to the in-process edge."""
    return openai.AsyncOpenAI(base_url="http://edge/v1", api_key=token, http_client=edge.client)


def aliases(base_url: str) -> dict[str, Any]:
    return {
        "fast": {"base_url": base_url, "mode": "chat", "model_id": "mock-model-a"},
        "auto": {"policy": "knn", "candidates": [MIXTRAL, GPT4], "default_model": MIXTRAL},
    }


def test_model_list_shape_sorting_and_scopes() -> None:
    snapshot = CatalogSnapshot(
        revision="cat_1",
        models=(
            router_pb2.CatalogModel(id="zeta", provider="openai"),
            router_pb2.CatalogModel(id="alpha"),
            router_pb2.CatalogModel(id="shadowed", provider="vllm"),
        ),
        aliases=("fast", "shadowed"),
        loaded_at=1_700_000_000,
    )
    listed = model_list(snapshot, None)
    assert listed["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in listed["data"]] == [
        ("alpha", "signalbox"),
        ("fast", "signalbox"),
        ("shadowed", "signalbox"),
        ("zeta", "openai"),
    ]
    assert {m["object"] for m in listed["data"]} == {"model"}
    assert {m["created"] for m in listed["data"]} == {1_700_000_000}
    scoped = model_list(snapshot, ["api:models", "models:fa*", "models:zeta"])
    assert [m["id"] for m in scoped["data"]] == ["fast", "zeta"]
    assert model_list(None, None) == {"object": "list", "data": []}


async def test_sdk_lists_aliases_and_catalog_models(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    async with (
        router_service(aliases(mock_upstream.base_url), catalog_path=REFERENCE_CATALOG) as router,
        make_edge(router_addr=router.addr) as edge,
    ):
        page = await sdk(edge).models.list()
        plain = await edge.client.get("/models", headers=BEARER)
        status = (await edge.client.get("/status")).json()
    owners = {m.id: m.owned_by for m in page.data}
    assert owners == {"auto": "signalbox", "fast": "signalbox", MIXTRAL: "vllm", GPT4: "openai"}
    assert [m.id for m in page.data] == sorted(owners)
    assert all(m.object == "model" and m.created > 0 for m in page.data)
    assert plain.status_code == 200 and plain.json()["data"] == [
        m.model_dump(exclude_none=True) for m in page.data
    ]
    revision = router.app.service.config.catalog.revision
    assert status["router"]["catalog_revision"] == revision


async def test_empty_list_when_router_is_off(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        page = await sdk(edge).models.list()
        status = (await edge.client.get("/status")).json()
    assert page.data == []
    assert status["router"]["catalog_revision"] is None


async def test_models_needs_client_auth(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.get("/v1/models")
    assert_error(response, 401, "missing_api_key", "authentication_error")


async def test_conditional_polling_and_router_outage(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    """A repeat poll sends the revision and gets `not_modified`; a dead router keeps the list."""
    static = {"fast": aliases(mock_upstream.base_url)["fast"]}
    async with router_service(static) as router:
        async with make_edge(router_addr=router.addr) as edge:
            catalog = edge.runtime.catalog
            first = await catalog.current()
            assert first is not None
            seen: list[str | None] = []
            original = router.app.service.catalog

            def spy(if_none_match: str | None = None) -> router_pb2.ModelCatalog:
                seen.append(if_none_match)
                return original(if_none_match)

            router.app.service.catalog = spy
            assert await catalog.refresh()
            # Every poll (ours, and the background poller's) is conditional on what is held.
            assert seen and set(seen) == {f'"{first.revision}"'}
            assert catalog.snapshot is first  # not modified: the same snapshot object
            await router.app.stop()
            assert not await catalog.refresh()
            page = await sdk(edge).models.list()
    assert sorted(m.id for m in page.data) == ["fast"]


@pytest.mark.parametrize("scopes", [["models:fa*"], ["api:models", "models:fa*"]])
async def test_listing_filtered_by_key_scopes(
    make_edge: EdgeFactory,
    router_service: RouterFactory,
    keys_service: RunningKeys,
    mock_upstream: MockUpstream,
    scopes: list[str],
) -> None:
    key = await keys_service.generate(scopes=scopes)
    async with (
        router_service(aliases(mock_upstream.base_url), catalog_path=REFERENCE_CATALOG) as router,
        make_edge(router_addr=router.addr, **managed(keys_service)) as edge,
    ):
        page = await sdk(edge, key.token).models.list()
    assert [m.id for m in page.data] == ["fast"]


async def test_key_without_models_api_scope_is_403(
    make_edge: EdgeFactory, keys_service: RunningKeys
) -> None:
    key = await keys_service.generate(scopes=["api:chat"])
    async with make_edge(**managed(keys_service)) as edge:
        response = await edge.client.get(
            "/v1/models", headers={"authorization": f"Bearer {key.token}"}
        )
    assert_error(response, 403, "insufficient_scope", "permission_error")
