"""deploy/docker/image_requirements.py: the images' dependency sets, and no torch in them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from deploy.docker import image_requirements as ir

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "docker" / "image_requirements.py"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCKED = ir.locked_names((REPO / "requirements" / "lock.txt").read_text())
# What the Dockerfile's deps stages pass to the script.
IMAGE_SETS = {"deps-core": [], "deps-knn": ["knn"]}


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution pip would install for `requirements`, read from this venv's metadata.

    The dev venv holds the whole lock file, so the metadata of every candidate is at hand and
    no index is consulted. Markers are evaluated for this interpreter and the extras asked for.
    """
    seen: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        name = ir.normalize(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        for child in metadata.requires(name) or []:
            parsed = Requirement(child)
            extras = requirement.extras or {""}
            if parsed.marker is None or any(parsed.marker.evaluate({"extra": e}) for e in extras):
                pending.append(parsed)
    return {n for n in seen if "[" not in n}


@pytest.mark.parametrize("stage", sorted(IMAGE_SETS))
def test_image_dependency_closure_has_no_torch(stage: str) -> None:
    requirements = ir.direct_requirements(PYPROJECT, IMAGE_SETS[stage])
    ir.check_pinned(requirements, LOCKED)
    installed = _closure(requirements)

    assert ir.forbidden_distributions(installed) == []
    assert installed <= LOCKED | {"setuptools", "pip"}, installed - LOCKED  # pins hold
    if stage == "deps-knn":
        assert {"onnxruntime", "faiss-cpu", "tokenizers", "numpy"} <= installed


def test_export_extra_is_the_one_that_pulls_torch() -> None:
    """torch only enters through `export` (build time), never through what an image installs."""
    closure = _closure(ir.direct_requirements(PYPROJECT, ["export"]))
    assert "torch" in ir.forbidden_distributions(closure)


def test_script_writes_the_requirement_file(tmp_path: Path) -> None:
    args = ["--extra", "knn", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True)
    written = (tmp_path / "requirements.txt").read_text().split()

    assert written[: len(PYPROJECT["project"]["dependencies"])] == [
        r.replace(" ", "") for r in PYPROJECT["project"]["dependencies"]
    ]
    assert "onnxruntime" in written
    assert "torch" not in written


def test_unpinned_and_unknown_names_are_refused() -> None:
    with pytest.raises(ir.RequirementsError, match="not pinned"):
        ir.check_pinned(["grpcio", "left-pad"], {"grpcio"})
    with pytest.raises(ir.RequirementsError, match="unknown extra"):
        ir.direct_requirements(PYPROJECT, ["gpu"])


def test_script_exit_status_on_bad_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--extra", "gpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown extra" in result.stderr


def test_check_forbidden_passes_a_clean_env_and_fails_one_with_torch(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    venv.create(clean, with_pip=False)
    ok = subprocess.run(
        [str(clean / "bin" / "python"), str(SCRIPT), "--check-forbidden"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr

    # This dev venv has torch (the `export` extra), so it must be refused.
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--check-forbidden"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "torch" in bad.stderr
