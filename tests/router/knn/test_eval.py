"""RouteLLM metrics on hand-checkable curves, and the CLI's build-index + eval on real data."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from services.router.knn_scorer.cli import register
from services.router.knn_scorer.embedding_cache import model_fingerprint
from services.router.knn_scorer.evaluation import baselines, cpt, evaluate_router
from services.router.knn_scorer.index import IndexManifest
from services.router.knn_scorer.training_data import TrainingSet, held_out, split
from tests.router.conftest import REFERENCE_CATALOG

STRONG = np.array([1, 1, 0, 1])
WEAK = np.array([0, 1, 0, 1])


def test_one_perfectly_ranked_win_gives_known_apgr_and_cpt() -> None:
    report = evaluate_router("r", np.array([0.9, 0.1, 0.2, 0.3]), STRONG, WEAK)
    # PGR(c) = min(4c, 1): the only gain is ranked first.
    assert report.apgr == pytest.approx(0.875)
    assert report.cpt50 == pytest.approx(0.125) and report.cpt80 == pytest.approx(0.2)
    assert report.curve[0].accuracy == 0.5 and report.curve[-1].accuracy == 0.75


def test_random_and_oracle_baselines() -> None:
    rng = np.random.default_rng(0)
    strong, weak = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    strong[:100] = 1
    random, oracle = baselines(strong, weak)
    assert random.apgr == pytest.approx(0.5) and random.cpt80 == pytest.approx(0.8)
    assert random.cpt50 == pytest.approx(0.5)
    assert oracle.apgr > 1.0 and oracle.cpt80 < 0.5


def test_cpt_interpolates_between_whole_queries() -> None:
    assert cpt(np.array([0.0, 0.4, 1.0]), 0.7) == pytest.approx(0.75)
    assert cpt(np.array([0.0, 0.2, 0.4]), 0.8) == 1.0


def test_evaluation_needs_a_stronger_strong_model() -> None:
    with pytest.raises(ValueError, match="strong model must beat"):
        evaluate_router("r", np.zeros(4), WEAK, STRONG)


def test_held_out_split_is_deterministic_and_about_a_fifth(real_subset: TrainingSet) -> None:
    train, test = split(real_subset)
    assert len(train) + len(test) == len(real_subset)
    assert 0.1 < len(test) / len(real_subset) < 0.3
    assert all(held_out(e.id) for e in test.examples)
    assert held_out("q_3e93c0d580b8") == held_out("q_3e93c0d580b8")


@dataclass(frozen=True)
class Cli:
    parser: argparse.ArgumentParser
    small: Path  # the first 150 prompts of the real subset
    common: list[str]  # --models, --model-dir

    def run(self, *args: str) -> int:
        return self.run_alone(*args, *self.common)

    def run_alone(self, *args: str) -> int:
        """Without the common --models/--model-dir (export-model takes neither)."""
        parsed = self.parser.parse_args(list(args))
        return parsed.run(parsed)


@pytest.fixture
def cli(tmp_path: Path, subset_file: Path, model_dir: Path) -> Cli:
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"".join(subset_file.read_bytes().splitlines(keepends=True)[:150]))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return Cli(parser, small, ["--models", str(REFERENCE_CATALOG), "--model-dir", str(model_dir)])


def test_cli_build_index_then_eval_on_real_prompts(
    tmp_path: Path, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "idx"
    assert cli.run("build-index", str(cli.small), "--out", str(out), "--exclude-held-out") == 0
    manifest = IndexManifest.read(out)
    assert (
        manifest.extra["subset"] == "filtered" and manifest.extra["method"]["kind"] == "calibrated"
    )
    assert (out / "calibration.json").is_file() and (out / "lexical.npz").is_file()

    report = tmp_path / "eval.json"
    args = ("--index", str(out), "--held-out", "--json", str(report))
    assert cli.run("eval", str(cli.small), *args) == 0
    printed = capsys.readouterr().out
    assert f"{150 - manifest.count} test examples, {manifest.count} indexed" in printed
    for name in ("random", "oracle", "knn-spec", "knn-learned", "quality/cost curve"):
        assert name in printed
    rows = {r["router"]: r for r in orjson.loads(report.read_bytes())}
    assert rows["random"]["apgr"] == 0.5 and rows["random"]["cpt80"] == 0.8
    assert len(rows["knn-learned"]["curve"]) == 11
    assert rows["random"]["apgr_sd"] is None and 0 < rows["knn-learned"]["apgr_sd"] < 0.5
    assert not (out / "online.jsonl").exists()  # eval never writes online examples


def test_cli_cross_validation_scores_every_prompt_out_of_fold(
    tmp_path: Path, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "cv.json"
    assert cli.run("eval", str(cli.small), "--folds", "3", "--json", str(report)) == 0
    assert "150 examples, 3-fold cross-validation" in capsys.readouterr().out
    rows = {r["router"]: r for r in orjson.loads(report.read_bytes())}
    assert set(rows) == {"random", "oracle", "knn-spec (§6, k=10)", "knn-learned"}
    assert rows["knn-learned"]["apgr_sd"] > 0
    assert not list(tmp_path.glob("*/manifest.json"))  # nothing written but the report

    assert cli.run("eval", str(cli.small), "--folds", "1") == 2


def test_export_model_refuses_a_token_limit_below_one(cli: Cli) -> None:
    with pytest.raises(SystemExit):
        cli.parser.parse_args(["export-model", "--out", "x", "--max-tokens", "0"])
    assert cli.parser.parse_args(["export-model", "--out", "x"]).max_tokens is None


def test_export_model_static_flags_are_validated(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    for dims in ("0", "385", "x"):
        with pytest.raises(SystemExit):
            cli.parser.parse_args(["export-model", "--out", "x", "--static", "--pca-dims", dims])
    parsed = cli.parser.parse_args(["export-model", "--out", "x", "--static", "--pca-dims", "384"])
    assert parsed.static and parsed.pca_dims == 384
    assert cli.run_alone("export-model", "--out", "x", "--pca-dims", "128") == 2
    assert "--pca-dims needs --static" in capsys.readouterr().err


def test_cli_build_index_and_eval_with_a_static_model_dir(
    tmp_path: Path, cli: Cli, static_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    static = replace(cli, common=[*cli.common[:2], "--model-dir", str(static_model_dir)])
    out, cache = tmp_path / "idx", tmp_path / "vectors"
    args = ("--out", str(out), "--exclude-held-out", "--cache-dir", str(cache))
    assert static.run("build-index", str(static.small), *args) == 0
    manifest = IndexManifest.read(out)
    assert manifest.embedding_model.endswith("@static128:128") and manifest.dim == 128
    assert [p.name for p in cache.iterdir()] == [model_fingerprint(static_model_dir)]
    assert static.run("eval", str(static.small), "--index", str(out), "--held-out") == 0
    assert f"{manifest.count} indexed" in capsys.readouterr().out
