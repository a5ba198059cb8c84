"""`examples/router/{http,grpc}_client.py` against a real KNN router process (loopback), plus
the standalone start: a prebuilt index dir, the exported model, one command."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.router.knn_scorer.artifacts import build_index
from services.router.knn_scorer.scorer import CALIBRATED_METHOD
from services.router.knn_scorer.training_data import TrainingSet
from tests.router.conftest import ALIASES, GPT4, MIXTRAL
from tests.router.knn.conftest import CachedEmbedder
from tests.router.processes import ROOT, Spawn, router_env, wait_serving

pytestmark = pytest.mark.e2e
EXAMPLES = ROOT / "examples" / "router"


async def run_example(script: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run an example as a user would (its own interpreter, cwd = repo); its JSON lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / script),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [orjson.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return proc.returncode or 0, lines, err.decode()


def steps(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["step"]: line for line in lines}


async def test_example_clients_against_a_knn_router_process(
    spawn: Spawn,
    tmp_path: Path,
    free_port: Callable[[], int],
    subset_file: Path,
    cached_embedder: CachedEmbedder,
    real_subset: TrainingSet,
    model_dir: Path,
) -> None:
    index_dir = tmp_path / "knn"
    build_index(subset_file, [GPT4, MIXTRAL], cached_embedder, index_dir, CALIBRATED_METHOD)
    grpc_port, http_port = free_port(), free_port()
    env = router_env(
        tmp_path,
        grpc_port,
        http_port,
        ALIASES,
        SIGNALBOX_KNN_INDEX_DIR=str(index_dir),
        SIGNALBOX_KNN_MODEL_DIR=str(model_dir),
        SIGNALBOX_ADMIN_TOKEN="adm",
        SIGNALBOX_ROUTER_DEFAULT_UPSTREAM="off",
    )
    child = spawn(env)
    await wait_serving(child, f"127.0.0.1:{grpc_port}")
    prompt = real_subset.examples[5].prompt

    code, lines, err = await run_example(
        "http_client.py", "--url", f"http://127.0.0.1:{http_port}", "--prompt", prompt,
        "--quality", "1",
    )  # fmt: skip
    assert code == 0, err
    http = steps(lines)
    assert http["capabilities"]["schema_versions"] == ["1.0", "1.1"]
    plan = http["plan"]
    assert plan["route_id"].startswith("rte_") and plan["strategy"] == "knn"
    assert plan["explain"].startswith("knn k=10 kept=") and plan["x_route_cache"] == "miss"
    assert plan["plan_token"].startswith("stk_") and len(plan["fallbacks"]) == 1
    assert http["feedback"] == {"step": "feedback", "status": 202, "accepted": 1}
    assert http["catalog"]["revalidated_status"] == 304
    assert sorted(http["catalog"]["models"]) == [GPT4, MIXTRAL]

    code, lines, err = await run_example(
        "grpc_client.py", "--addr", f"127.0.0.1:{grpc_port}", "--prompt", prompt,
        "--quality", "0",
    )  # fmt: skip
    assert code == 0, err
    grpc = steps(lines)
    assert grpc["plan"]["strategy"] == "knn" and grpc["plan"]["x_route_cache"] == "miss"
    assert grpc["plan"]["explain"].split(" -> ")[0] == plan["explain"].split(" -> ")[0]
    assert len(grpc["plan_batch"]["models"]) == 3 and grpc["plan_batch"]["batch_id"]
    assert grpc["feedback"]["accepted"] == 1 and grpc["catalog"]["not_modified"] is True

    # Typed errors on both surfaces: exit 1 with the Schema 1.1 code.
    code, lines, _ = await run_example(
        "http_client.py", "--url", f"http://127.0.0.1:{http_port}", "--alias", "nope"
    )
    assert code == 1 and lines[-1]["status"] == 404 and lines[-1]["code"] == "ALIAS_UNKNOWN"
    code, lines, _ = await run_example(
        "grpc_client.py", "--addr", f"127.0.0.1:{grpc_port}", "--alias", "nope"
    )
    assert code == 1 and lines[-1]["status"] == "NOT_FOUND"
    assert lines[-1]["code"] == "ALIAS_UNKNOWN"

    # Both feedbacks taught the same query (one online example, persisted), and a reload
    # replays it from the index dir.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
        reloaded = await client.post("/reload/routing", headers={"authorization": "Bearer adm"})
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["stats"]["knn_examples"] == len(real_subset) + 1
    logged = [orjson.loads(x) for x in (index_dir / "online.jsonl").read_bytes().splitlines()]
    chosen = [p["explain"].split(" -> ")[1].split()[0] for p in (plan, grpc["plan"])]
    assert [(r["model"], r["sum"]) for r in logged] == [(chosen[0], 1.0), (chosen[1], 0.0)]


def test_the_example_config_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SIGNALBOX_CONFIG_FILE=examples/router/router.toml` (the README's one command) is valid."""
    from services.router.routing_config import load_routing_config
    from services.router.settings import RouterSettings

    monkeypatch.chdir(ROOT)
    for name in list(os.environ):
        if name.startswith("SIGNALBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SIGNALBOX_CONFIG_FILE", str(EXAMPLES / "router.toml"))
    settings = RouterSettings()
    assert settings.knn_model_dir == Path("build/knn-model")
    assert settings.router_http_bind == "127.0.0.1:8090" and not settings.router_default_upstream
    config = load_routing_config(settings)
    assert config.aliases["auto"].default_model == MIXTRAL
    assert sorted(config.catalog.entries) == [GPT4, MIXTRAL]
