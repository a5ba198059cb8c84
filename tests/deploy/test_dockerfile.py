"""Static checks of deploy/docker/Dockerfile and .dockerignore: every container-review finding."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Dockerfile, parse_dockerfile

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
SERVICES = ("edge", "router", "keys", "analytics")
RUNTIME_SOURCES = {"deps-core", "deps-knn", "package", "knn_assets"}
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev)\b")
DOWNLOADERS = re.compile(r"\b(curl|wget|huggingface-cli|hf_hub_download|snapshot_download)\b")


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def _runs(df: Dockerfile, target: str) -> list[str]:
    return [i.args for stage in df.chain(target) for i in stage.all("RUN")]


def test_every_service_has_a_target_on_the_compiler_free_runtime(dockerfile: Dockerfile) -> None:
    for service in SERVICES:
        names = [s.name for s in dockerfile.chain(service)]
        assert "runtime" in names, f"{service} is not built on the runtime stage"
        assert "builder" not in names, f"{service} inherits the builder (compilers)"


def test_base_images_are_pinned_to_an_exact_python_311_slim_bookworm(
    dockerfile: Dockerfile,
) -> None:
    external = [s for s in dockerfile.stages if not dockerfile.is_stage(s.base)]
    assert external, "no base image found"
    for stage in external:
        image = dockerfile.resolve(stage.base)
        assert PINNED_PYTHON.match(image), f"stage {stage.name}: base {image!r} is not pinned"


def test_compilers_live_only_in_the_builder(dockerfile: Dockerfile) -> None:
    builder_runs = " ".join(i.args for i in dockerfile.stage("builder").all("RUN"))
    assert "build-essential" in builder_runs
    for service in SERVICES:
        for run in _runs(dockerfile, service):
            assert not COMPILERS.search(run), f"{service}: compiler install in runtime: {run}"


def test_runtime_targets_copy_only_built_artifacts(dockerfile: Dockerfile) -> None:
    for service in SERVICES:
        for stage in dockerfile.chain(service):
            for copy in stage.all("COPY"):
                source = copy.flags().get("from")
                assert source in RUNTIME_SOURCES, f"{service}: COPY {copy.args!r}"
            for run in stage.all("RUN"):
                mounted = re.findall(r"from=([\w-]+)", run.args)
                assert set(mounted) <= RUNTIME_SOURCES, f"{service}: {run.args}"


def test_no_failure_is_ever_swallowed(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        for run in stage.all("RUN"):
            assert "||" not in run.args, f"line {run.line}: `||` can hide a failed step"
            assert not re.search(r"set\s+\+e|;\s*true\b|2>\s*/dev/null", run.args), run
    assert "|| true" not in DOCKERFILE.read_text()


def test_services_run_as_non_root_under_tini(dockerfile: Dockerfile) -> None:
    for service in SERVICES:
        user = dockerfile.last(service, "USER")
        assert user is not None, f"{service} has no USER"
        assert user.args.split(":")[0] not in {"root", "0"}, f"{service} runs as root"
        entrypoint = dockerfile.last(service, "ENTRYPOINT")
        assert entrypoint is not None and entrypoint.exec_form() == ["/usr/bin/tini", "--"]
        stopsignal = dockerfile.last(service, "STOPSIGNAL")
        assert stopsignal is not None and stopsignal.args == "SIGTERM"
        assert "tini" in " ".join(_runs(dockerfile, service))
        cmd = dockerfile.last(service, "CMD")
        assert cmd is not None and cmd.exec_form() == ["python", "-m", f"services.{service}"]


def test_user_switch_comes_after_every_root_step(dockerfile: Dockerfile) -> None:
    """Installs run as root; nothing after USER may need to write the image's code."""
    for service in SERVICES:
        after_user = False
        for stage in dockerfile.chain(service):
            for instruction in stage.instructions:
                if instruction.keyword == "USER":
                    after_user = True
                elif after_user:
                    assert instruction.keyword not in {"RUN", "COPY", "ADD"}, (
                        f"{service}: {instruction.keyword} at line {instruction.line} after USER"
                    )


def test_every_service_has_a_healthcheck_matching_its_ports(dockerfile: Dockerfile) -> None:
    ports = {"edge": "8088", "router": "50051", "keys": "50052", "analytics": "50053"}
    for service, port in ports.items():
        healthcheck = dockerfile.last(service, "HEALTHCHECK")
        assert healthcheck is not None, f"{service} has no HEALTHCHECK"
        assert "start-period" in healthcheck.flags()
        command = " ".join(healthcheck.exec_form())
        env = dockerfile.env(service)
        exposed = " ".join(i.args for s in dockerfile.chain(service) for i in s.all("EXPOSE"))
        assert port in exposed.split()
        assert env[f"SIGNALBOX_{service.upper()}_BIND"] == f"0.0.0.0:{port}"
        if service == "edge":
            assert env["SIGNALBOX_HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/_health/live"
            assert "SIGNALBOX_HEALTHCHECK_URL" in command
        else:
            assert env["SIGNALBOX_HEALTHCHECK_ADDR"] == f"127.0.0.1:{port}"
            assert "grpc_health.v1" in command and "SERVING" in command


def test_no_runtime_step_mentions_torch_or_downloads_models(dockerfile: Dockerfile) -> None:
    for service in SERVICES:
        for run in _runs(dockerfile, service):
            assert "torch" not in run
            assert not DOWNLOADERS.search(run), f"{service}: {run}"


def test_every_dependency_stage_fails_the_build_on_forbidden_packages(
    dockerfile: Dockerfile,
) -> None:
    for name in ("deps-core", "deps-knn"):
        runs = [i.args for i in dockerfile.stage(name).all("RUN")]
        assert any("--check-forbidden" in run for run in runs), name
        assert all("torch" not in run for run in runs), name
        installs = " ".join(runs)
        assert installs.count("--constraint requirements/lock.txt") == installs.count(
            "pip install"
        ), f"{name}: every pip install must hold the lock pins"


def test_dependency_layers_come_before_the_source(dockerfile: Dockerfile) -> None:
    for name in ("builder", "deps-core", "deps-knn"):
        for copy in dockerfile.stage(name).all("COPY"):
            assert not re.search(r"\b(services|protos)/", copy.args), f"{name}: {copy.args}"
    package = " ".join(i.args for i in dockerfile.stage("package").all("COPY"))
    assert "services/" in package and "protos/" in package
    for service in SERVICES:
        steps = [i for s in dockerfile.chain(service) for i in s.instructions]
        venv = next(i for i in steps if i.keyword == "COPY" and "/opt/venv" in i.args)
        wheel = next(i for i in steps if i.keyword == "RUN" and "from=package" in i.args)
        assert venv.line < wheel.line, f"{service}: code layer before the dependency layer"


def test_protoc_matches_the_makefile(dockerfile: Dockerfile) -> None:
    makefile = (REPO / "Makefile").read_text()
    pb = re.search(r"^PB\s*:=\s*(\S+)", makefile, re.M).group(1)
    recipe = re.search(r"grpc_tools\.protoc(.*?)\$\(PROTOS\)", makefile, re.S).group(1)
    make_flags = {f.replace("$(PB)", pb) for f in recipe.split() if f.startswith("--")}
    make_flags.add(f"-I{pb}=protos")
    run = next(
        i.args for i in dockerfile.stage("package").all("RUN") if "grpc_tools.protoc" in i.args
    )
    docker_flags = {f for f in shlex.split(run) if f.startswith(("--", "-I"))}
    assert make_flags <= docker_flags
    assert "protos/*.proto" in run


def test_router_ships_encoder_and_index_and_never_downloads(dockerfile: Dockerfile) -> None:
    copies = [i for i in dockerfile.stage("router").all("COPY")]
    assert {c.flags().get("from") for c in copies} == {"knn_assets"}
    targets = {c.body().split()[-1] for c in copies}
    env = dockerfile.env("router")
    # The router loads its encoder from SIGNALBOX_KNN_MODEL_DIR; the model *name* stays default.
    assert env["SIGNALBOX_KNN_MODEL_DIR"].rstrip("/") + "/" in targets
    assert "SIGNALBOX_EMBEDDING_MODEL" not in env
    assert env["SIGNALBOX_KNN_INDEX_DIR"].rstrip("/") + "/" in targets
    assert env["HF_HUB_OFFLINE"] == "1"
    checks = " ".join(i.args for i in dockerfile.stage("router").all("RUN"))
    assert "manifest.json" in checks and "index.faiss" in checks and "embedder.json" in checks


def test_only_the_router_gets_the_knn_dependencies(dockerfile: Dockerfile) -> None:
    for service in SERVICES:
        venv_sources = {
            i.flags().get("from")
            for s in dockerfile.chain(service)
            for i in s.all("COPY")
            if "/opt/venv" in i.args
        }
        assert venv_sources == ({"deps-knn"} if service == "router" else {"deps-core"}), service
