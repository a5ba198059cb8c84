"""Edge client CPU per route-feedback item: `FeedbackBatch` vs the per-item `Feedback` stream
(`python -m bench.route_feedback_bench`).

The edge's own `FeedbackSender` flushes the same edge-shaped items (usage, cost, status) to a
real router in a child process, so the CPU measured (`time.process_time` of this process) is the
client's alone. Two servers of the one router: its own gRPC port (has `FeedbackBatch`) and a
second port whose servicer lacks it, as an external Schema 1.1 router would, so the sender falls
back to the stream after one UNIMPLEMENTED answer (a warm-up flush takes it). Rounds alternate
batch, stream, stream, batch to spread the shared box's noise over both. Writes
bench/results/route_feedback.json.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import orjson

from bench.local_router import local_router
from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.edge.route_feedback import BATCH_MAX, FeedbackSender
from services.router.grpc_api import RouterServicer

RESULTS = Path(__file__).parent / "results" / "route_feedback.json"
ITEMS_PER_ROUND = 5_000
ROUNDS = 4  # per mode, in ABBA order
ORDER = ("batch", "stream", "stream", "batch")


class StreamOnlyServicer(RouterServicer):
    """The router's servicer without the extension: `FeedbackBatch` answers UNIMPLEMENTED."""

    FeedbackBatch = router_pb2_grpc.RouterServicer.FeedbackBatch  # type: ignore[assignment]


def _serve(conn: Connection) -> None:
    """Child: the router plus a stream-only server over the same service; ports sent back."""

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            router = local_router(Path(tmp), {})
            await router.start()
            assert router.service is not None
            legacy = grpc.aio.server()
            router_pb2_grpc.add_RouterServicer_to_server(StreamOnlyServicer(router.service), legacy)
            legacy_port = legacy.add_insecure_port("127.0.0.1:0")
            await legacy.start()
            conn.send((router.grpc_port, legacy_port))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
            await legacy.stop(None)
            await router.stop()

    asyncio.run(main())


class NoPrices:
    def cost(self, *args: Any) -> None:
        return None


def _item(n: int) -> router_pb2.RouteFeedback:
    """An item as the edge builds one for a successful chat request."""
    fb = router_pb2.RouteFeedback(
        route_id=f"rte_{n:016x}", model_id="mock-model-a", success=True, duration_ms=57,
        status_code=200, rl_applied=False, cache_hit=n % 2 == 0, actual_cost_micro=1234,
        currency="USD",
    )  # fmt: skip
    fb.usage.prompt_tokens, fb.usage.completion_tokens = 120, 48
    fb.usage.cached_tokens, fb.usage.reasoning_tokens = 0, 0
    return fb


async def _round(sender: FeedbackSender, items: list[router_pb2.RouteFeedback]) -> dict[str, float]:
    """Queue and flush `items`; client CPU and wall time per item (µs)."""
    before = sender.stats()["accepted"]
    cpu, wall = time.process_time(), time.perf_counter()
    for item in items:
        sender.submit(item)
    await sender.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    accepted = sender.stats()["accepted"] - before
    assert accepted == len(items), (accepted, sender.stats())
    return {"cpu_us": cpu / len(items) * 1e6, "wall_us": wall / len(items) * 1e6}


async def _measure(ports: tuple[int, int]) -> dict[str, Any]:
    items = [_item(n) for n in range(ITEMS_PER_ROUND)]
    samples: dict[str, list[dict[str, float]]] = {"batch": [], "stream": []}
    async with (
        open_channel(f"127.0.0.1:{ports[0]}") as batch_channel,
        open_channel(f"127.0.0.1:{ports[1]}") as stream_channel,
    ):
        senders = {
            "batch": FeedbackSender(batch_channel, NoPrices()),
            "stream": FeedbackSender(stream_channel, NoPrices()),
        }
        for sender in senders.values():
            await _round(sender, items[: BATCH_MAX * 2])  # warm-up; the stream one falls back
        assert senders["batch"].batched and not senders["stream"].batched
        for _ in range(ROUNDS // 2):
            for mode in ORDER:
                samples[mode].append(await _round(senders[mode], items))
    return samples


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    cpu = [s["cpu_us"] for s in samples]
    return {
        "cpu_us_per_item_median": round(statistics.median(cpu), 2),
        "cpu_us_per_item_range": [round(min(cpu), 2), round(max(cpu), 2)],
        "wall_us_per_item_median": round(statistics.median(s["wall_us"] for s in samples), 2),
    }


def run() -> dict[str, Any]:
    parent, child = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        ports = parent.recv()
        samples = asyncio.run(_measure(ports))
    finally:
        parent.send("stop")
        server.join(10)
    batch, stream = _summary(samples["batch"]), _summary(samples["stream"])
    return {
        "items_per_round": ITEMS_PER_ROUND,
        "rounds_per_mode": ROUNDS,
        "batch_max": BATCH_MAX,
        "feedback_batch": batch,
        "feedback_stream": stream,
        "cpu_ratio_batch_over_stream": round(
            batch["cpu_us_per_item_median"] / stream["cpu_us_per_item_median"], 3
        ),
    }


def main() -> None:
    result = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for mode in ("feedback_stream", "feedback_batch"):
        r = result[mode]
        low, high = r["cpu_us_per_item_range"]
        print(
            f"{mode:16s} client CPU {r['cpu_us_per_item_median']:7.2f} µs/item"
            f" ({low:.2f}-{high:.2f})  wall {r['wall_us_per_item_median']:7.2f} µs/item"
        )
    print(f"batch / stream CPU ratio: {result['cpu_ratio_batch_over_stream']}  -> {RESULTS}")


if __name__ == "__main__":
    main()
