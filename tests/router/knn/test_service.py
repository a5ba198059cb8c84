"""The learned scorer inside the real router: plan over HTTP, learn from feedback quality,
hot-swap a rebuilt index on `/reload/routing` (real processes' sockets on loopback)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.router.knn_scorer.artifacts import build_index
from services.router.knn_scorer.scorer import CALIBRATED_METHOD, LearnedKnnScorer
from services.router.knn_scorer.startup import MODEL_DIR_ENV
from services.router.knn_scorer.training_data import TrainingSet
from tests.router.conftest import GPT4, MIXTRAL, StartRouter
from tests.router.knn.conftest import CachedEmbedder


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
