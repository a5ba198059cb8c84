"""`signalbox-router export-model | build-index | eval` (registered into the router's CLI).

`register(subparsers)` adds the three commands; each sets `run`, which takes the parsed args
and returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

DEFAULT_MODEL_DIR = Path("./data/knn-model")
MINILM_DIM = 384  # the most principal components a static export can keep


def register(subparsers: Any) -> None:
    export = subparsers.add_parser(
        "export-model",
        help="export MiniLM as an int8 ONNX (or --static) model dir (needs the export extra)",
    )
    export.add_argument("--out", type=Path, required=True, help="model dir to write")
    export.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        help="embed a prompt's first N tokens (ONNX: default 64, at most 256; static: 128, 512)",
    )
    export.add_argument(
        "--static",
        action="store_true",
        help="distil a static per-token table (Model2Vec) instead of the ONNX model",
    )
    export.add_argument(
        "--pca-dims",
        type=_pca_dims,
        default=None,
        help=f"--static: principal components kept (default 128, at most {MINILM_DIM})",
    )
    export.set_defaults(run=_export_model)

    build = subparsers.add_parser("build-index", help="embed training JSONL into an index dir")
    build.add_argument("train", type=Path, help="training JSONL (config-files §3)")
    build.add_argument("--models", type=Path, required=True, help="catalog models.json")
    build.add_argument("--out", type=Path, required=True, help="index dir to write")
    _model_dir_arg(build)
    build.add_argument(
        "--method",
        choices=("calibrated", "spec"),
        default="calibrated",
        help="scoring method stored in the manifest (default: calibrated)",
    )
    build.add_argument(
        "--hnsw-threshold",
        type=int,
        default=None,
        help="above this many examples use HNSW instead of exact search (default 20000)",
    )
    build.add_argument(
        "--exclude-held-out",
        action="store_true",
        help="train on the 80 %% whose id hash is not held out (pair with eval --held-out)",
    )
    build.set_defaults(run=_build_index)

    evaluate = subparsers.add_parser(
        "eval", help="APGR / CPT of the index's router on labelled JSONL (RouteLLM metrics)"
    )
    evaluate.add_argument("test", type=Path, help="labelled JSONL (config-files §3)")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=Path, help="index dir")
    source.add_argument(
        "--folds",
        type=int,
        metavar="N",
        help="no index: N-fold cross-validation over the file (an index per fold, in memory)",
    )
    evaluate.add_argument("--models", type=Path, required=True, help="catalog models.json")
    _model_dir_arg(evaluate)
    evaluate.add_argument(
        "--held-out", action="store_true", help="evaluate only the held-out 20 %% (id hash)"
    )
    evaluate.add_argument("--strong", default="gpt-4-1106-preview")
    evaluate.add_argument("--weak", default="mixtral-8x7b-instruct")
    evaluate.add_argument("--json", type=Path, help="also write the reports as JSON here")
    evaluate.set_defaults(run=_eval)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _pca_dims(text: str) -> int:
    value = _positive_int(text)
    if value > MINILM_DIM:
        raise argparse.ArgumentTypeError(f"{text} is more than MiniLM's {MINILM_DIM} dimensions")
    return value


def _model_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("SIGNALBOX_KNN_MODEL_DIR", DEFAULT_MODEL_DIR)),
        help="exported model dir, ONNX or static (env SIGNALBOX_KNN_MODEL_DIR)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("SIGNALBOX_KNN_EMBED_CACHE", "build/knn-embeddings")),
        help="prompt-vector cache, per exported model (env SIGNALBOX_KNN_EMBED_CACHE)",
    )
    parser.add_argument("--no-cache", action="store_true", help="embed every prompt afresh")


def _embedder(args: argparse.Namespace) -> Any:
    """The model dir's embedder (ONNX on all cores: offline work), behind the vector cache
    unless disabled."""
    from services.router.knn_scorer.embedder import load_embedder
    from services.router.knn_scorer.embedding_cache import CachingEmbedder

    embedder = load_embedder(args.model_dir, threads=os.cpu_count() or 1)
    if args.no_cache:
        return embedder
    return CachingEmbedder(embedder, args.model_dir, args.cache_dir)


def _export_model(args: argparse.Namespace) -> int:
    from services.router.knn_scorer.export import DEFAULT_MAX_TOKENS, export_model

    if args.static:
        info = _export_static(args)
    elif args.pca_dims is not None:
        print("signalbox-router export-model: --pca-dims needs --static", file=sys.stderr)
        return 2
    else:
        tokens = DEFAULT_MAX_TOKENS if args.max_tokens is None else args.max_tokens
        info = export_model(args.out, max_tokens=tokens)
    print(
        f"exported {info.embedding_model} ({info.kind}, {info.dim}-d, first "
        f"{info.max_seq_length} tokens, {info.quantization}) to {args.out}"
    )
    return 0


def _export_static(args: argparse.Namespace) -> Any:
    from services.router.knn_scorer.export import (
        DEFAULT_PCA_DIMS,
        DEFAULT_STATIC_MAX_TOKENS,
        export_static,
        vocabulary_size,
    )

    dims = DEFAULT_PCA_DIMS if args.pca_dims is None else args.pca_dims
    tokens = DEFAULT_STATIC_MAX_TOKENS if args.max_tokens is None else args.max_tokens
    with _progress(vocabulary_size(), "distilling", unit="token") as bar:
        return export_static(args.out, pca_dims=dims, max_tokens=tokens, progress=bar.update)


def _progress(total: int, what: str, unit: str = "prompt") -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit=unit, file=sys.stderr)


def _build_index(args: argparse.Namespace) -> int:
    from services.router.knn_scorer.artifacts import build_index, catalog_models
    from services.router.knn_scorer.index import HNSW_THRESHOLD
    from services.router.knn_scorer.scorer import CALIBRATED_METHOD, SPEC_METHOD
    from services.router.knn_scorer.training_data import held_out, load_training_set

    embedder = _embedder(args)
    models = catalog_models(args.models)
    method = CALIBRATED_METHOD if args.method == "calibrated" else SPEC_METHOD
    keep = (lambda example_id: not held_out(example_id)) if args.exclude_held_out else None
    total = len(load_training_set(args.train, models, keep=keep))
    with _progress(total, "embedding") as bar:
        index = build_index(
            args.train,
            models,
            embedder,
            args.out,
            method,
            threshold=args.hnsw_threshold or HNSW_THRESHOLD,
            progress=bar.update,
            keep=keep,
        )
    manifest = index.manifest
    print(
        f"{manifest.count} examples ({manifest.index_type}, {manifest.extra['method']['kind']}, "
        f"models {', '.join(manifest.models)}) -> {args.out}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from services.router.catalog import parse_catalog
    from services.router.knn_scorer.artifacts import embed_texts, load_scorer
    from services.router.knn_scorer.evaluation import report_json
    from services.router.knn_scorer.routing_eval import (
        compare,
        cross_validate,
        eval_set,
        format_reports,
    )
    from services.router.knn_scorer.training_data import held_out, load_training_set

    if args.folds is not None and (args.folds < 2 or args.held_out):
        print("signalbox-router eval: --folds needs N >= 2 and no --held-out", file=sys.stderr)
        return 2
    catalog = parse_catalog(args.models.read_bytes())
    embedder = _embedder(args)
    scorer = None if args.index is None else load_scorer(args.index, embedder, learn=False)
    indexed = set() if scorer is None else set(scorer.index.ids)
    data = load_training_set(
        args.test,
        catalog.entries,
        keep=lambda i: i not in indexed and (held_out(i) or not args.held_out),
    )
    if len(data) == 0:
        print("signalbox-router eval: no test examples left", file=sys.stderr)
        return 1
    with _progress(len(data), "embedding") as bar:
        vectors = embed_texts(embedder, data.prompts, bar.update)
    if scorer is None:
        reports = cross_validate(
            data, vectors, embedder, catalog, args.strong, args.weak, args.folds
        )
        print(f"{len(data)} examples, {args.folds}-fold cross-validation")
    else:
        test = eval_set(data, vectors, catalog, args.strong, args.weak)
        reports = compare(scorer, test, catalog, args.strong, args.weak)
        print(f"{len(test.data)} test examples, {len(scorer.index)} indexed")
    print(format_reports(reports))
    if args.json:
        args.json.write_bytes(
            orjson.dumps([report_json(r) for r in reports], option=orjson.OPT_INDENT_2)
        )
    return 0
