"""`router_knn_bench` with the static (Model2Vec-style) MiniLM embedder instead of the ONNX one.

The same queries, index sizes, recall and PlanBatch measurements: only the embedding differs
(a tokenisation and a gather, ~0.2 ms, instead of a transformer run), so the two result files
show what the embedder costs inside a whole KNN decision. Writes
`bench/results/router_knn_static.json`.
Run: `.venv/bin/python -m bench.router_knn_static_bench` (needs `signalbox-router export-model
--static --out build/knn-model-static`, or `SIGNALBOX_KNN_STATIC_MODEL_DIR`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.router_knn_bench import RESULTS, main

STATIC_MODEL_DIR = Path(os.environ.get("SIGNALBOX_KNN_STATIC_MODEL_DIR", "build/knn-model-static"))

if __name__ == "__main__":
    sys.exit(main(STATIC_MODEL_DIR, RESULTS.with_name("router_knn_static.json")))
