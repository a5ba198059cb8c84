"""Just enough of a Dockerfile reader for static checks: global ARGs, stages and instructions."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

_FLAG = re.compile(r"^--([a-z-]+)(?:=(\S*))?\s*")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def flags(self) -> dict[str, str]:
        """Leading `--name=value` options (COPY --from=..., HEALTHCHECK --interval=...)."""
        found, rest = {}, self.args
        while match := _FLAG.match(rest):
            found[match.group(1)] = match.group(2) or ""
            rest = rest[match.end() :]
        return found

    def body(self) -> str:
        """The arguments after the leading flags."""
        rest = self.args
        while match := _FLAG.match(rest):
            rest = rest[match.end() :]
        return rest

    def exec_form(self) -> list[str]:
        """A JSON-array argument (CMD/ENTRYPOINT/HEALTHCHECK CMD) as a list."""
        body = self.body()
        if self.keyword == "HEALTHCHECK":
            body = body.removeprefix("CMD").strip()
        return json.loads(body)


@dataclass
class Stage:
    name: str
    base: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]
    text: str

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r}")

    def is_stage(self, name: str) -> bool:
        return any(s.name == name for s in self.stages)

    def resolve(self, value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.global_args[m.group(1)], value)

    def chain(self, target: str) -> list[Stage]:
        """The target and the stages it is built FROM, root first."""
        stages = [self.stage(target)]
        while self.is_stage(stages[0].base):
            stages.insert(0, self.stage(stages[0].base))
        return stages

    def last(self, target: str, keyword: str) -> Instruction | None:
        found = [i for s in self.chain(target) for i in s.all(keyword)]
        return found[-1] if found else None

    def env(self, target: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for stage in self.chain(target):
            for env in stage.all("ENV"):
                for token in shlex.split(env.args):
                    key, _, value = token.partition("=")
                    values[key] = value
        return values


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join `\\` continuations; comment lines inside a continuation are dropped, as Docker does."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(p for p in pending if p)))
        pending = []
    return lines


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            stages.append(Stage(name=name, base=parts[0], line=number))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {number}: {keyword} before the first FROM")
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(global_args, stages, text)
