"""The learned scorer inside the real router: plan over HTTP, learn from feedback quality,
hot-swap a rebuilt index on `/reload/routing` (real processes' sockets on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.router.errors import ErrorCode, RouteFailure
from services.router.knn_scorer.artifacts import build_index, load_scorer
from services.router.knn_scorer.embedder import StaticEmbedder
from services.router.knn_scorer.scorer import CALIBRATED_METHOD, LearnedKnnScorer
from services.router.knn_scorer.startup import MODEL_DIR_ENV
from services.router.knn_scorer.training_data import TrainingSet
from services.router.planner import PlanResult
from services.router.routing_config import load_routing_config
from services.router.service import RouterService
from services.router.settings import RouterSettings
from services.router.sticky import MemoryStickyStore
from tests.router.conftest import GPT4, MIXTRAL, StartRouter
from tests.router.knn.conftest import CachedEmbedder, request


@pytest.fixture
def index_dir(tmp_path: Path, subset_file: Path, cached_embedder: CachedEmbedder) -> Path:
    out = tmp_path / "knn"
    build_index(subset_file, [GPT4, MIXTRAL], cached_embedder, out, CALIBRATED_METHOD)
    return out


@pytest.fixture
def fewer(tmp_path: Path, subset_file: Path) -> Path:
    path = tmp_path / "fewer.jsonl"
    path.write_bytes(b"".join(subset_file.read_bytes().splitlines(keepends=True)[:100]))
    return path


async def test_plan_learn_and_hot_swap(
    index_dir: Path,
    fewer: Path,
    real_subset: TrainingSet,
    cached_embedder: CachedEmbedder,
    model_dir: Path,
    start_router: StartRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    router = await start_router(knn_index_dir=index_dir, admin_token="adm-secret")
    assert router.service is not None
    scorer = router.service.knn.scorer
    assert isinstance(scorer, LearnedKnnScorer) and scorer.examples == len(real_subset)

    example = real_subset.examples[11]
    body = {
        "alias": "auto",
        "privacy_mode": "summary",
        "conversation": {"summary": example.prompt},
        "estimates": {"prompt_tokens": 120},
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.http_port}") as http:
        reply = await http.post("/route/plan", json=body)
        assert reply.status_code == 200, reply.text
        plan = reply.json()
        detail = plan["policy"]["explain_detail"]
        assert plan["content_used"] == "summary" and detail["method"] == "calibrated"
        assert detail["neighbors"][0]["id"] == example.id
        assert detail["fallback_reason"] in (None, "low_confidence")

        bad = await http.post(
            "/route/feedback", json={"route_id": plan["route_id"], "success": True, "quality": 2}
        )
        assert bad.status_code == 400
        feedback = {"route_id": plan["route_id"], "success": True, "quality": 0.25}
        accepted = await http.post("/route/feedback", json={**feedback, "model_id": GPT4})
        assert accepted.status_code == 202 and accepted.json() == {"accepted": 1}
        assert scorer.examples == len(real_subset) + 1
        assert scorer.online is not None and len(scorer.online) == 1

        # Rebuild the dir with fewer examples, then reload: the new index serves, the learned
        # example and the route memory carry over.
        build_index(fewer, [GPT4, MIXTRAL], cached_embedder, index_dir, CALIBRATED_METHOD)
        reloaded = await http.post(
            "/reload/routing", headers={"authorization": "Bearer adm-secret"}
        )
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["stats"]["knn_examples"] == 101
        swapped = router.service.knn.scorer
        assert isinstance(swapped, LearnedKnnScorer) and swapped is not scorer
        assert swapped.memory is scorer.memory
        again = await http.post("/route/feedback", json={**feedback, "model_id": MIXTRAL})
        assert again.status_code == 202 and swapped.examples == 101  # same query: updated


async def test_quality_in_a_feedback_batch_teaches_the_scorer(
    index_dir: Path,
    real_subset: TrainingSet,
    model_dir: Path,
    start_router: StartRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The `FeedbackBatch` extension over gRPC: each item handled as on the `Feedback` stream
    (the invalid one skipped and not counted, the valid one learned)."""
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    router = await start_router(knn_index_dir=index_dir)
    assert router.service is not None
    scorer = router.service.knn.scorer
    assert isinstance(scorer, LearnedKnnScorer) and scorer.examples == len(real_subset)
    request = router_pb2.RouteRequest(alias="auto", privacy_mode="summary")
    request.conversation.summary = real_subset.examples[11].prompt
    request.estimates.prompt_tokens = 120
    async with open_channel(f"127.0.0.1:{router.grpc_port}") as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        plan = await stub.Plan(request)
        invalid = router_pb2.RouteFeedback(route_id=plan.route_id, success=True, quality=2)
        valid = router_pb2.RouteFeedback(
            route_id=plan.route_id, model_id=GPT4, success=True, quality=0.25
        )
        ack = await stub.FeedbackBatch(router_pb2.RouteFeedbackBatch(items=[invalid, valid]))
    assert ack.accepted == 1
    assert scorer.examples == len(real_subset) + 1
    assert scorer.online is not None and len(scorer.online) == 1


async def test_hot_swap_under_load_drops_no_request(
    index_dir: Path,
    fewer: Path,
    subset_file: Path,
    real_subset: TrainingSet,
    cached_embedder: CachedEmbedder,
    model_dir: Path,
    start_router: StartRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plans keep flowing on both surfaces while `RouterAdmin.Reload` (gRPC) and
    `POST /reload/routing` swap indexes of different sizes underneath them."""
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    router = await start_router(knn_index_dir=index_dir, admin_token="adm")
    prompts = ["What is 7 times 8?", "Name a prime above 50.", "Who wrote Hamlet?"]
    stop = asyncio.Event()
    outcomes: list[str] = []

    async def grpc_loop(stub: router_pb2_grpc.RouterStub) -> None:
        i = 0
        while not stop.is_set():
            req = router_pb2.RouteRequest(alias="auto", privacy_mode="summary")
            req.conversation.summary = prompts[i % len(prompts)]
            plan = await stub.Plan(req, timeout=10)
            outcomes.append(plan.policy.id)
            i += 1

    async def http_loop(http: httpx.AsyncClient) -> None:
        i = 0
        while not stop.is_set():
            body = {"alias": "auto", "privacy_mode": "summary"}
            body["conversation"] = {"summary": prompts[i % len(prompts)]}
            reply = await http.post("/route/plan", json=body)
            outcomes.append(reply.json()["policy"]["id"] if reply.status_code == 200 else "err")
            i += 1

    sizes = []
    async with (
        open_channel(f"127.0.0.1:{router.grpc_port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.http_port}", timeout=10) as http,
    ):
        admin = router_pb2_grpc.RouterAdminStub(channel)
        loops = [
            asyncio.create_task(grpc_loop(router_pb2_grpc.RouterStub(channel))),
            asyncio.create_task(grpc_loop(router_pb2_grpc.RouterStub(channel))),
            asyncio.create_task(http_loop(http)),
        ]
        for source in (fewer, subset_file, fewer):
            await asyncio.sleep(0.3)
            await asyncio.to_thread(
                build_index, source, [GPT4, MIXTRAL], cached_embedder, index_dir, CALIBRATED_METHOD
            )
            if source is subset_file:
                reply = await http.post("/reload/routing", headers={"authorization": "Bearer adm"})
                assert reply.status_code == 200, reply.text
                sizes.append(reply.json()["stats"]["knn_examples"])
            else:
                reloaded = await admin.Reload(router_pb2.ReloadRequest(), timeout=60)
                assert reloaded.success, reloaded.message
                sizes.append(reloaded.stats.knn_examples)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*loops)
    assert sizes == [100, len(real_subset), 100]
    assert len(outcomes) >= 6 and set(outcomes) == {"knn"}


class CountingEmbedder:
    """Counts encoder runs (calls) of the wrapped embedder."""

    def __init__(self, inner: CachedEmbedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.calls: list[int] = []

    def embed(self, texts: list[str]) -> Any:
        self.calls.append(len(texts))
        return self.inner.embed(texts)


async def test_plan_batch_runs_concurrently_and_answers_in_order(
    index_dir: Path,
    real_subset: TrainingSet,
    cached_embedder: CachedEmbedder,
    router_settings: Callable[..., RouterSettings],
) -> None:
    counting = CountingEmbedder(cached_embedder)
    scorer = load_scorer(index_dir, counting, learn=False)
    service = RouterService(
        load_routing_config(router_settings()),
        sticky=MemoryStickyStore(),
        load_settings=router_settings,
        knn_scorer=scorer,
    )
    texts = [e.prompt for e in real_subset.examples[:6]]
    requests: list[Any] = [request(t) for t in texts]
    requests.insert(2, router_pb2.RouteRequest(alias="nano-basic"))
    requests.insert(4, request(texts[0], alias="ghost-alias-never-configured"))
    requests.insert(5, RouteFailure(ErrorCode.INVALID_REQUEST, "bad element"))
    batch = await service.plan_batch(requests)
    assert counting.calls == [1] * 6  # one encoder run per KNN plan
    kinds = [r.plan.policy.id if isinstance(r, PlanResult) else r.code for r in batch]
    assert kinds[:6] == ["knn", "knn", "alias_table", "knn", "default", ErrorCode.INVALID_REQUEST]
    assert kinds[6:] == ["knn"] * 3
    knn_plans = [r for r in batch if isinstance(r, PlanResult) and r.plan.policy.id == "knn"]
    for planned, text in zip(knn_plans, texts, strict=True):
        single = await service.plan(request(text))
        got, want = (
            MessageToDict(p.plan.policy.explain_detail)["neighbors"] for p in (planned, single)
        )
        assert got == want  # in order: each plan answers its own request


async def test_a_static_model_dir_serves_knn_plans_over_http(
    tmp_path: Path,
    subset_file: Path,
    real_subset: TrainingSet,
    static_model_dir: Path,
    static_embedder: StaticEmbedder,
    start_router: StartRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`export-model --static` output and an index built with it, served by the real router."""
    index_dir = tmp_path / "static-knn"
    build_index(subset_file, [GPT4, MIXTRAL], static_embedder, index_dir, CALIBRATED_METHOD)
    monkeypatch.setenv(MODEL_DIR_ENV, str(static_model_dir))
    router = await start_router(knn_index_dir=index_dir)
    assert router.service is not None
    scorer = router.service.knn.scorer
    assert isinstance(scorer, LearnedKnnScorer) and isinstance(scorer.embedder, StaticEmbedder)

    example = real_subset.examples[11]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.http_port}") as http:
        plan = await _plan(http, example.prompt)
        detail = plan["policy"]["explain_detail"]
        assert plan["policy"]["id"] == "knn" and detail["method"] == "calibrated"
        assert detail["neighbors"][0] == {"id": example.id, "similarity": pytest.approx(1, 1e-4)}
        assert detail["timings_ms"]["embed"] > 0 and detail["timings_ms"]["search"] >= 0
        # No tokens at all (a zero-width space): a zero vector, no neighbour close enough,
        # the alias's default model.
        blank = (await _plan(http, "\u200b"))["policy"]
        assert blank["id"] == "knn"
        assert blank["explain_detail"]["fallback_reason"] == "too_few_neighbors"
        assert blank["explain_detail"]["chosen"] == MIXTRAL


async def _plan(http: httpx.AsyncClient, text: str) -> dict[str, Any]:
    body = {"alias": "auto", "privacy_mode": "summary", "conversation": {"summary": text}}
    reply = await http.post("/route/plan", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()
