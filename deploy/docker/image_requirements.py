"""Dependency lists for the container images, straight from pyproject.toml and the lock file.

The image build installs dependencies before it copies any source, so it cannot use `pip install
'.[knn]'`; this script writes the same requirement set (base deps + the chosen extras) for
`pip install -c requirements/lock.txt -r ...`. The `knn` extra is torch-free by design (the
router serves an exported ONNX model baked from the `knn_assets` build context).
`--check-forbidden` fails the build when the installed environment contains torch or CUDA wheels.

Runs on the bare base image: standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Distributions that must never reach a runtime image (review finding C1: torch drags in CUDA).
FORBIDDEN = re.compile(r"^(torch|torchvision|triton|nvidia-.*|sentence-transformers)$")


class RequirementsError(ValueError):
    """The requirement set cannot be installed with the pins holding."""


def normalize(name: str) -> str:
    """PEP 503 project-name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise RequirementsError(f"cannot read a project name from {requirement!r}")
    return normalize(match.group(1))


def direct_requirements(pyproject: dict, extras: Sequence[str]) -> list[str]:
    """Base dependencies followed by each extra's, in declaration order, without duplicates."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise RequirementsError(f"unknown extra(s) {unknown}; pyproject defines {sorted(optional)}")
    seen: set[str] = set()
    result: list[str] = []
    for requirement in [*project["dependencies"], *(r for e in extras for r in optional[e])]:
        name = requirement_name(requirement)
        if name not in seen:
            seen.add(name)
            result.append(requirement)
    return result


def locked_names(lock_text: str) -> set[str]:
    """Names pinned with `==` in a pip lock file."""
    names = set()
    for line in lock_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            names.add(requirement_name(line))
    return names


def check_pinned(requirements: Sequence[str], locked: set[str]) -> None:
    """Every requirement must be pinned in the lock, so images install what CI tested."""
    unpinned = sorted({requirement_name(r) for r in requirements} - locked)
    if unpinned:
        raise RequirementsError(f"not pinned in requirements/lock.txt: {unpinned}")


def forbidden_distributions(names: Iterable[str]) -> list[str]:
    return sorted({normalize(n) for n in names if FORBIDDEN.match(normalize(n))})


def _installed_names() -> list[str]:
    return [dist.metadata["Name"] for dist in metadata.distributions()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="optional-dependency group")
    parser.add_argument("--out", type=Path, help="directory for requirements.txt")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements" / "lock.txt")
    parser.add_argument(
        "--check-forbidden",
        action="store_true",
        help="exit 1 if this interpreter's environment has torch/CUDA distributions",
    )
    args = parser.parse_args(argv)

    if args.check_forbidden:
        found = forbidden_distributions(_installed_names())
        if found:
            print(f"forbidden in a runtime image: {', '.join(found)}", file=sys.stderr)
            return 1
        return 0
    if args.out is None:
        parser.error("--out is required unless --check-forbidden is given")
    try:
        requirements = direct_requirements(tomllib.loads(args.pyproject.read_text()), args.extra)
        check_pinned(requirements, locked_names(args.lock.read_text()))
    except RequirementsError as exc:
        print(f"image_requirements: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
