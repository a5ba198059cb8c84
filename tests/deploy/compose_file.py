"""Read deploy/compose the way `docker compose config` would, without the Docker CLI plugin.

Only the interpolation forms the file uses are supported (`${VAR}`, `${VAR:-default}`,
`${VAR:?message}`, `$$`); anything else is an error rather than a silent pass-through.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

_REFERENCE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}|\$(?P<bad>\w)")


class InterpolationError(ValueError):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bad"):
            raise InterpolationError(f"unsupported reference in {value!r}")
        name, op, arg = match.group("name", "op", "arg")
        current = env.get(name, "")
        if op == ":?" and not current:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        if op == ":-" and not current:
            return arg
        return current

    return _REFERENCE.sub(substitute, value)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path.name}: not KEY=value: {line!r}")
            values[key.strip()] = value.strip()
    return values


def required_variables(text: str) -> set[str]:
    return {m.group("name") for m in _REFERENCE.finditer(text) if m.group("op") == ":?"}


def referenced_variables(text: str) -> set[str]:
    return {m.group("name") for m in _REFERENCE.finditer(text) if m.group("name")}
