"""docker/compose.yaml: valid against the Compose specification's JSON schema, and it runs what the
worker registry lists, Dagster as its deployment guide lays it out, Prometheus and Grafana."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tickforge.streaming import registry

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SCHEMA = json.loads((REPO / "tests" / "schemas" / "compose-spec.json").read_text())
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon", "dagster-code")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())  # resolves the x-* anchors and << merges


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(DOCKER / "compose.yaml")


def _validator() -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    return jsonschema.Draft7Validator(SCHEMA)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(
    "path, value",
    [
        (("services", "bar-worker", "restart"), 5),  # a string in the specification
        (("services", "grafana", "ports"), "3001:3000"),  # a list
        (("services", "prometheus", "imagee"), "prom/prometheus"),  # no such service attribute
    ],
)
def test_the_schema_refuses_a_broken_file(compose: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(_validator().iter_errors(broken)), f"{path} = {value!r} passed the schema"


def test_every_registry_worker_has_its_container(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for spec in registry.WORKERS:
        if spec.name == "dagster":
            assert set(DAGSTER_SERVICES) <= set(services)
            continue
        assert spec.name in services, f"registry worker {spec.name} has no service"
        command = services[spec.name]["command"]
        assert command[: len(spec.command)] == list(spec.command), (spec.name, command)
        if spec.metrics:  # a loop worker: its health check reads the liveness gauge
            assert services[spec.name]["healthcheck"]["test"] == ["CMD", "tickforge", "stream", "health"]


def test_dagster_runs_webserver_daemon_and_a_separate_code_location(compose: dict[str, Any]) -> None:
    services = compose["services"]
    code = services["dagster-code"]["entrypoint"]
    assert code[:3] == ["dagster", "api", "grpc"] and "tickforge.definitions" in code
    workspace = _yaml(DOCKER / "dagster" / "workspace.yaml")
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] == "dagster-code" and str(server["port"]) == code[code.index("-p") + 1]
    for name, program in (("dagster-webserver", "dagster-webserver"), ("dagster-daemon", "dagster-daemon")):
        service = services[name]
        assert service["entrypoint"][0] == program
        workspace_in_container = service["entrypoint"][service["entrypoint"].index("-w") + 1]
        assert f"./dagster/workspace.yaml:/app/{workspace_in_container}:ro" in service["volumes"]
        assert "dagster-code" in service["depends_on"]


def test_prometheus_scrapes_every_metrics_worker_and_grafana_shows_the_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = compose["x-tickforge"]["environment"]
    assert env["TICKFORGE_STREAMING__METRICS_HOST"] == "0.0.0.0"  # reachable from the Prometheus container
    port = env["TICKFORGE_STREAMING__METRICS_PORT"]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in services["prometheus"]["volumes"] if v.startswith("./")}
    config = _yaml(DOCKER / mounted["./prometheus/prometheus.yml"].replace("/etc/prometheus", "prometheus"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "tickforge")
    scraped = {g["labels"]["service"]: g for g in job["static_configs"]}
    assert set(scraped) == {spec.name for spec in registry.WORKERS if spec.metrics}
    for name, group in scraped.items():
        assert group["targets"] == [f"{name}:{port}"] and group["labels"]["instance"] == name

    grafana = services["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    source = _yaml(DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "tickforge.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == source["uid"] for p in panels)
    assert all(t["datasource"]["uid"] == source["uid"] for p in panels for t in p["targets"])
