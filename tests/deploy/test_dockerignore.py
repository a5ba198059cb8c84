""".dockerignore: the build context holds what the Dockerfile copies and nothing sensitive."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.dockerfile import parse_dockerfile

REPO = Path(__file__).resolve().parents[2]


def _pattern(rule: str) -> re.Pattern[str]:
    """Docker's matching: `**` spans directories, `*` and `?` stay inside one path segment."""
    out = ""
    i = 0
    while i < len(rule):
        if rule.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif rule.startswith("**", i):
            out, i = out + ".*", i + 2
        elif rule[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif rule[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(rule[i]), i + 1
    return re.compile(out)


def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    return rules


def excluded(path: str) -> bool:
    """Last matching rule wins; a rule matching a parent directory covers its contents."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, pattern in _rules():
        if any(pattern.fullmatch(c) for c in candidates):
            result = not negated
    return result


def test_everything_the_dockerfile_copies_is_in_the_context() -> None:
    dockerfile = parse_dockerfile((REPO / "deploy" / "docker" / "Dockerfile").read_text())
    sources = [
        source
        for stage in dockerfile.stages
        for copy in stage.all("COPY")
        if "from" not in copy.flags()
        for source in copy.body().split()[:-1]
    ]
    assert sources, "no COPY from the context found"
    for source in sources:
        matches = [p for p in REPO.glob(source.rstrip("/")) if p.exists()]
        assert matches, f"COPY source {source} does not exist"
        files = [f for m in matches for f in ([m] if m.is_file() else m.rglob("*")) if f.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" in relative or relative.startswith("services/common/pb/"):
                continue
            assert not excluded(relative), f"{relative} is copied but ignored"


def test_secrets_caches_and_host_artifacts_stay_out() -> None:
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "deploy/compose/.env",
        "deploy/compose/providers.env",
        "data/signalbox.db",
        "tests/conftest.py",
        "bench/results/x.json",
        "build/knn/index/index.faiss",
        "services/common/pb/keys_pb2.py",
        "services/common/pb/keys_pb2_grpc.py",
        "services/edge/__pycache__/app.cpython-311.pyc",
    ):
        assert excluded(path), f"{path} would be sent to the Docker daemon"
    assert not excluded("services/common/pb/__init__.py")
    assert not excluded("services/edge/app.py")
