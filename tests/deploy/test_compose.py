"""Static checks of deploy/compose: topology, hardening, secrets, health ordering, limits, OTel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose_file import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    InterpolationError,
    interpolate_tree,
    raw_compose,
    read_env_file,
    referenced_variables,
    required_variables,
)
from tests.deploy.dockerfile import parse_dockerfile

REPO = Path(__file__).resolve().parents[2]
SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "SIGNALBOX_ADMIN_TOKEN",
    "SIGNALBOX_INTERNAL_TOKEN",
)
SIGNALBOX_SERVICES = ("router", "keys", "analytics", "edge-1", "edge-2")
# Services compose cannot probe, and why (the test keeps the reason honest).
UNPROBED = {"otel-collector": "distroless image", "knn-index": "one-shot job"}
MIN_START_PERIOD = {"router": 60, "edge-1": 30, "edge-2": 30, "postgres": 30}
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _filled_env() -> dict[str, str]:
    env = read_env_file(ENV_EXAMPLE)
    env.update({name: f"test-{name.lower()}-" + "x" * 32 for name in SECRETS})
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate_tree(raw_compose(), _filled_env())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, f"unexpected duration {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def _bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)b?", str(value).lower())
    assert match, f"unexpected size {value!r}"
    return int(match.group(1)) * UNITS[match.group(2)]


def _networks(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks", []))


def test_env_example_declares_every_variable_and_commits_no_secret() -> None:
    text = COMPOSE_FILE.read_text()
    example = read_env_file(ENV_EXAMPLE)
    assert required_variables(text) <= set(example)
    assert referenced_variables(text) <= set(example), referenced_variables(text) - set(example)
    for name in (*SECRETS, "OPENAI_API_KEY"):
        assert example[name] == "", f"{name} has a value in .env.example"
    assert (COMPOSE_DIR / ".gitignore").read_text().split() == [".env", "providers.env"]


def test_compose_refuses_to_start_without_the_secrets() -> None:
    for secret in SECRETS:
        env = _filled_env()
        env[secret] = ""
        with pytest.raises(InterpolationError, match=secret):
            interpolate_tree(raw_compose(), env)


def test_only_nginx_publishes_a_port(services: dict[str, Any]) -> None:
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"nginx"}
    assert services["nginx"]["ports"] == ["8080:8080"]
    assert "ports" not in services["postgres"]


def test_networks_are_split_and_datastores_unreachable_from_outside(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    networks = compose["networks"]
    assert networks["data"]["internal"] is True
    assert networks["backend"]["internal"] is True
    assert not networks["frontend"].get("internal")
    assert _networks(services["nginx"]) == {"frontend", "backend"}
    for store in ("postgres", "redis"):
        assert _networks(services[store]) == {"data"}
    for name in ("router", "keys", "analytics", "otel-collector"):
        assert _networks(services[name]) == {"data"}
    for edge in ("edge-1", "edge-2"):
        assert _networks(services[edge]) == {"backend", "data", "egress"}
    on_frontend = {n for n, s in services.items() if "frontend" in _networks(s)}
    assert on_frontend == {"nginx"}
    assert services["knn-index"]["network_mode"] == "none"


def test_edge_trusts_forwarded_for_only_from_the_nginx_network(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    subnet = compose["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    for edge in ("edge-1", "edge-2"):
        assert services[edge]["environment"]["SIGNALBOX_TRUSTED_PROXIES"] == subnet


def test_redis_requires_a_password_that_every_client_url_carries(
    services: dict[str, Any],
) -> None:
    password = _filled_env()["REDIS_PASSWORD"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == password
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == password
    for name in SIGNALBOX_SERVICES:
        url = services[name]["environment"]["SIGNALBOX_REDIS_URL"]
        assert url == f"redis://:{password}@redis:6379/0"


def test_every_signalbox_service_gets_its_wiring(services: dict[str, Any]) -> None:
    env = _filled_env()
    for name in SIGNALBOX_SERVICES:
        service_env = services[name]["environment"]
        assert service_env["SIGNALBOX_INTERNAL_TOKEN"] == env["SIGNALBOX_INTERNAL_TOKEN"]
        assert service_env["SIGNALBOX_DATABASE_URL"].startswith("postgresql://signalbox:")
        assert service_env["SIGNALBOX_DATABASE_URL"].endswith("@postgres:5432/signalbox")
    for edge in ("edge-1", "edge-2"):
        edge_env = services[edge]["environment"]
        assert edge_env["SIGNALBOX_ROUTER_ADDR"] == "router:50051"
        assert edge_env["SIGNALBOX_KEYS_ADDR"] == "keys:50052"
        assert edge_env["SIGNALBOX_ANALYTICS_ADDR"] == "analytics:50053"
        assert edge_env["SIGNALBOX_ADMIN_TOKEN"] == env["SIGNALBOX_ADMIN_TOKEN"]
        assert {"SIGNALBOX_CATALOG_PATH", "OPENAI_API_KEY"} <= set(edge_env)
    router_env = services["router"]["environment"]
    assert {"SIGNALBOX_ROUTER_ALIASES", "SIGNALBOX_CATALOG_PATH", "SIGNALBOX_KNN_INDEX_DIR"} <= set(
        router_env
    )
    assert "OPENAI_API_KEY" not in router_env  # provider keys reach the edge only


def test_every_service_has_limits_and_reservations(services: dict[str, Any]) -> None:
    for name, service in services.items():
        resources = service.get("deploy", {}).get("resources", {})
        limits, reservations = resources.get("limits"), resources.get("reservations")
        assert limits and reservations, f"{name} has no limits/reservations"
        for key in ("cpus", "memory"):
            assert key in limits and key in reservations, f"{name}: {key}"
        assert float(reservations["cpus"]) <= float(limits["cpus"]), name
        assert _bytes(reservations["memory"]) <= _bytes(limits["memory"]), name


def test_healthchecks_have_start_periods_that_fit(services: dict[str, Any]) -> None:
    dockerfile = parse_dockerfile((REPO / "deploy" / "docker" / "Dockerfile").read_text())
    for name, service in services.items():
        healthcheck = service.get("healthcheck", {})
        if name in UNPROBED:
            assert healthcheck == {"disable": True}, name
            continue
        assert "start_period" in healthcheck, f"{name} has no start_period"
        assert _seconds(healthcheck["start_period"]) >= MIN_START_PERIOD.get(name, 10), name
        if "test" not in healthcheck:  # inherits the probe of our own image
            target = service["build"]["target"]
            assert dockerfile.last(target, "HEALTHCHECK") is not None, name
        else:
            assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_startup_order_waits_for_health(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if dependency == "knn-index":
                assert rule == {"condition": "service_completed_successfully", "required": False}
                continue
            assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert dependency not in UNPROBED, f"{name} waits on unprobed {dependency}"
    assert set(services["nginx"]["depends_on"]) == {"edge-1", "edge-2"}
    assert {"router", "keys", "analytics", "postgres", "redis"} <= set(
        services["edge-1"]["depends_on"]
    )


def test_containers_are_hardened(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("read_only") is True, name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert "/tmp" in service.get("tmpfs", []), name
    assert services["nginx"]["user"] == "101:101"


def test_images_are_pinned_or_built_here(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert image.startswith("signalbox-"), name
        else:
            # An exact release (postgres numbers them major.minor) or a digest; never `latest`.
            assert re.search(r":\d+\.\d+(\.\d+)?(-[a-z]+)?(@sha256:[0-9a-f]{64})?$", image), (
                f"{name}: {image} is not pinned"
            )


def test_builds_use_the_repo_dockerfile_targets(services: dict[str, Any]) -> None:
    dockerfile = parse_dockerfile((REPO / "deploy" / "docker" / "Dockerfile").read_text())
    for name, service in services.items():
        if "build" not in service:
            continue
        build = service["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == REPO
        assert build["dockerfile"] == "deploy/docker/Dockerfile"
        assert dockerfile.is_stage(build["target"]), name
    assert services["edge-1"]["build"]["target"] == services["edge-2"]["build"]["target"] == "edge"
    assert set(services["router"]["build"]["additional_contexts"]) == {"knn_assets"}


def test_config_is_mounted_read_only_and_state_lives_in_named_volumes(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source, _target, *mode = mount.split(":")
            if source.startswith((".", "/")):
                assert mode == ["ro"], f"{name}: bind mount {mount} is writable"
            else:
                assert source in declared, f"{name}: undeclared volume {source}"
    spools = {m for e in ("edge-1", "edge-2") for m in services[e]["volumes"] if "spool" in m}
    assert len({m.split(":")[0] for m in spools}) == 2  # one spool per replica


def test_profiles_hold_the_optional_parts(services: dict[str, Any]) -> None:
    profiles = {name: s.get("profiles") for name, s in services.items() if s.get("profiles")}
    assert profiles == {"otel-collector": ["observability"], "knn-index": ["knn"]}
    job = services["knn-index"]
    assert job["restart"] == "no"
    assert job["command"][:3] == ["python", "-m", "services.router"]
    assert any(m.endswith(":/data/routing:ro") for m in job["volumes"])


def test_knn_index_job_command_is_accepted_by_the_router_cli(services: dict[str, Any]) -> None:
    """The job's argv parses with the real CLI and writes where the router serves from."""
    from services.router.__main__ import _parser

    job = services["knn-index"]
    args = _parser().parse_args(job["command"][3:])
    assert args.command == "build-index"
    assert str(args.train).startswith("/data/routing/")
    assert str(args.models).startswith("/data/routing/")
    assert args.no_cache  # the root filesystem is read-only
    router_index = services["router"]["environment"]["SIGNALBOX_KNN_INDEX_DIR"]
    assert str(args.out) == router_index
    assert any(m.endswith(f":{router_index}") for m in job["volumes"])
    assert any(m.endswith(f":{router_index}") for m in services["router"]["volumes"])


def test_nginx_gets_the_repo_template_and_every_placeholder(services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    template = (REPO / "deploy" / "nginx" / "nginx.conf").read_text()
    placeholders = set(re.findall(r"\$\{(SIGNALBOX_NGINX_\w+)\}", template))
    provided = {k for k in nginx["environment"] if k.startswith("SIGNALBOX_NGINX_")}
    assert placeholders == provided
    assert "../nginx/nginx.conf:/etc/nginx/templates/nginx.conf.template:ro" in nginx["volumes"]
    output = nginx["environment"]["NGINX_ENVSUBST_OUTPUT_DIR"]
    assert nginx["command"][:3] == ["nginx", "-c", f"{output}/nginx.conf"]
    assert nginx["environment"]["SIGNALBOX_NGINX_LISTEN"] == "8080"
    upstreams = nginx["environment"]["SIGNALBOX_NGINX_UPSTREAMS"]
    assert re.findall(r"server (\S+)", upstreams) == ["edge-1:8088", "edge-2:8088"]


def test_otel_memory_limiter_is_first_in_every_pipeline(services: dict[str, Any]) -> None:
    config = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][0] == "memory_limiter", name
        for part in ("receivers", "processors", "exporters"):
            section = config[part]
            assert all(component in section for component in pipeline[part]), (name, part)
    limiter = config["processors"]["memory_limiter"]
    limit = _bytes(services["otel-collector"]["deploy"]["resources"]["limits"]["memory"])
    assert limiter["limit_mib"] * 1024**2 <= 0.8 * limit
    assert limiter["spike_limit_mib"] <= 0.25 * limiter["limit_mib"]
    assert any(
        m.endswith(":ro") and "otel-collector.yaml" in m
        for m in services["otel-collector"]["volumes"]
    )
