"""deploy/compose, the root Dockerfile and Grafana's provisioning, checked without Docker.

The Compose file is parsed and its wiring asserted: every service is there, every file it
mounts from the repository exists, the hoptrace containers reach the in-Compose Kafka, Redis
and collector, the Prometheus template renders to targets that exist, the healthchecks that
depends_on waits for exist. compose-go (the library `docker compose` is built on, compiled
here with Go) loads the file as `docker compose config` would; the real `docker compose
config` runs too when the Compose plugin is installed. The Dockerfile's `pip install .` is
run on the build context .dockerignore leaves. Nothing here starts a container or a broker.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hoptrace.examples.orders import pipeline as orders
from hoptrace.pipeline.stages import DEAD_LETTER_SUFFIX, CeleryTransport, KafkaTransport

REPOSITORY = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPOSITORY / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
PROVISIONING = REPOSITORY / "deploy" / "grafana" / "provisioning"
ORDERS_SPEC = "hoptrace.examples.orders:pipeline"
HOPTRACE_SERVICES = {"validate", "ship", "celery", "monitor", "publisher"}
SERVICES = {"kafka", "kafka-init", "redis", "otel-collector", "jaeger", "prometheus", "grafana", *HOPTRACE_SERVICES}
ONE_SHOT = {"kafka-init", "publisher"}
DASHBOARDS = REPOSITORY / "deploy" / "grafana" / "dashboards"
"""Written for issue 12's point 2; Compose mounts the folder whether or not it is there yet."""

COMPOSE_GO_VERSION = "v2.16.2"
"""compose-go, the loader `docker compose` is built on (v2.17 needs a newer Go than 1.26.8)."""
COMPOSE_CONFIG_GO = """\
// Loads Compose files as `docker compose config` does (compose-go: the Compose schema,
// interpolation, env files, depends_on) and prints the resolved project, or the error.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(files []string) error {
	options, err := cli.NewProjectOptions(files, cli.WithOsEnv, cli.WithDotEnv)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	out, err := project.MarshalYAML()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
"""

Service = dict[str, Any]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, Service]:
    return _compose()["services"]


def _bind_mounts() -> list[tuple[str, Path, str]]:
    """(service, repository path, container path) of every bind mount (short syntax, a relative source)."""
    mounts = []
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source, target, *_ = volume.split(":")
            if source.startswith("."):
                mounts.append((name, (COMPOSE_DIR / source).resolve(), target))
    return mounts


def _env(service: Service) -> dict[str, str]:
    """The environment Compose gives SERVICE: its env_file, then its own environment."""
    env: dict[str, str] = {}
    files = service.get("env_file", [])
    for path in [files] if isinstance(files, str) else files:
        for line in (COMPOSE_DIR / path).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    env.update({key: str(value) for key, value in (service.get("environment") or {}).items()})
    return env


def _stages(command: list[str]) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == "--stage"]


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_every_service_is_there() -> None:
    assert set(_services()) == SERVICES


@pytest.mark.parametrize(("service", "path", "target"), [pytest.param(*mount, id=f"{mount[0]}:{mount[2]}") for mount in _bind_mounts()])
def test_every_mounted_repository_file_exists(service: str, path: Path, target: str) -> None:
    if path == DASHBOARDS and not path.exists():
        pytest.skip("deploy/grafana/dashboards/ is not written yet (issue 12, point 2); Grafana starts with no dashboards")
    assert path.exists(), f"{service} mounts {path.relative_to(REPOSITORY)}, which does not exist"
    assert REPOSITORY in path.parents, f"{service} mounts {path} from outside the repository"


def test_env_files_exist() -> None:
    for name, service in _services().items():
        if "env_file" in service:
            assert (COMPOSE_DIR / service["env_file"]).is_file(), name


def test_images_are_pinned() -> None:
    for name, service in _services().items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
        if name in HOPTRACE_SERVICES:
            assert service["build"] == {"context": "../..", "dockerfile": "Dockerfile"}, name
            assert image == "hoptrace:local"


def test_one_worker_per_kafka_stage_and_one_for_the_celery_stages() -> None:
    kafka = {stage.name for stage in orders if isinstance(stage.transport, KafkaTransport)}
    celery = {stage.name for stage in orders if isinstance(stage.transport, CeleryTransport)}
    workers = [_stages(s["command"]) for s in _services().values() if s.get("command", [""])[0] == "worker"]
    assert sorted(tuple(sorted(stages)) for stages in workers) == sorted([(name,) for name in kafka] + [tuple(sorted(celery))])
    for name in HOPTRACE_SERVICES:
        command = _services()[name]["command"]
        assert command[1] == ORDERS_SPEC, name
        if command[0] == "worker":
            assert "--no-monitor" in command, f"{name}: the monitor service reports depth and lag, once"
    assert _services()["monitor"]["command"][0] == "monitor"
    first = next(iter(orders)).name
    assert _services()["publisher"]["command"][:3] == ["publish", ORDERS_SPEC, first], "jobs start at the pipeline's first stage"


def test_each_kafka_stage_container_has_a_hostname_of_its_own_that_outlives_it() -> None:
    """The static member id is made from the hostname: a recreated container (a new id, by default its hostname) keeps it only when fixed."""
    kafka = {stage.name for stage in orders if isinstance(stage.transport, KafkaTransport)}
    workers = [service for service in _services().values() if service.get("command", [""])[0] == "worker"]
    hostnames = {service["hostname"] for service in workers if set(_stages(service["command"])) <= kafka}
    assert hostnames == {f"orders-{stage}" for stage in kafka}


def test_hoptrace_containers_reach_the_in_compose_kafka_redis_and_collector() -> None:
    services = _services()
    kafka = services["kafka"]["environment"]
    internal = next(listener for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",") if listener.startswith("INTERNAL://"))
    collector = services["otel-collector"]["environment"]
    names = []
    for name in HOPTRACE_SERVICES:
        env = _env(services[name])
        assert env["HOPTRACE_KAFKA_BOOTSTRAP"] == internal.removeprefix("INTERNAL://"), name
        redis = urlsplit(env["HOPTRACE_REDIS_URL"])
        assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379), name
        otlp = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert otlp.hostname == "otel-collector" and otlp.port == _port(collector["HOPTRACE_COLLECTOR_GRPC"]), name
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        assert env["HOPTRACE_NAMESPACE"] == "", f"{name}: the topics kafka-init creates are the pipeline's, unprefixed"
        names.append(env["OTEL_SERVICE_NAME"])
        if name != "publisher":  # it waits for the workers, which wait for these
            assert {"kafka-init", "redis", "otel-collector"} <= set(services[name]["depends_on"]), name
    assert len(names) == len(set(names)), f"one OTEL_SERVICE_NAME per service: {names}"


def test_kafka_init_creates_every_topic_of_the_pipeline() -> None:
    script = _services()["kafka-init"]["command"][0]
    created = set(re.findall(r"^create (\S+) \d+$", script, re.MULTILINE))
    topics = {stage.transport.topic for stage in orders if isinstance(stage.transport, KafkaTransport)}
    assert created == topics | {topic + DEAD_LETTER_SUFFIX for topic in topics}


def test_redis_persists_with_an_append_only_file() -> None:
    redis = _services()["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-data" in _compose()["volumes"]


def test_the_collector_uses_the_shared_config_listening_on_all_addresses() -> None:
    services = _services()
    collector = services["otel-collector"]
    assert "../collector/otelcol.yaml:/etc/otelcol-contrib/config.yaml:ro" in collector["volumes"]
    config = yaml.safe_load((REPOSITORY / "deploy" / "collector" / "otelcol.yaml").read_text())
    env = collector["environment"]
    for placeholder in (
        config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        config["extensions"]["health_check"]["endpoint"],
        config["exporters"]["prometheus"]["endpoint"],
    ):
        variable = placeholder.removeprefix("${env:").split(":-")[0]
        assert env[variable].startswith("0.0.0.0:"), variable
    jaeger = services["jaeger"]["environment"]
    assert env["HOPTRACE_JAEGER_OTLP"] == f"jaeger:{_port(jaeger['HOPTRACE_JAEGER_OTLP'])}"
    assert "../jaeger/jaeger.yaml:/etc/jaeger/config.yaml:ro" in services["jaeger"]["volumes"]


def test_the_prometheus_template_renders_to_the_compose_targets(tmp_path: Path) -> None:
    """render-config.sh (POSIX sh, as it runs in the prom/prometheus image) with the service's environment."""
    services = _services()
    prometheus = services["prometheus"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh to run deploy/compose/render-config.sh with")
    rendered = tmp_path / "prometheus.yml"
    env = {"PATH": "/usr/bin:/bin", **{key: str(value) for key, value in prometheus["environment"].items()}}
    subprocess.run(
        [sh, str(COMPOSE_DIR / "render-config.sh"), str(REPOSITORY / "deploy" / "prometheus" / "prometheus.yml"), str(rendered)], env=env, check=True
    )
    text = rendered.read_text()
    assert "${env:" not in "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    config = yaml.safe_load(text)
    targets = {target for job in config["scrape_configs"] for static in job["static_configs"] for target in static["targets"]}
    collector = services["otel-collector"]["environment"]
    assert targets == {
        f"otel-collector:{_port(collector['HOPTRACE_COLLECTOR_PROMETHEUS'])}",
        f"otel-collector:{collector['HOPTRACE_COLLECTOR_TELEMETRY_PORT']}",
    }
    assert config["global"]["scrape_interval"] == prometheus["environment"]["HOPTRACE_PROMETHEUS_SCRAPE_INTERVAL"]
    assert prometheus["entrypoint"][2:4] == ["/etc/hoptrace/prometheus.yml", "/prometheus/prometheus.yml"]
    assert "--config.file=/prometheus/prometheus.yml" in prometheus["command"]


def test_depends_on_waits_only_for_what_can_report_it() -> None:
    services = _services()
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy; it has no healthcheck"
            if condition["condition"] == "service_completed_successfully":
                assert dependency in ONE_SHOT, f"{name} waits for {dependency} to finish; it runs forever"
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name


def test_hoptrace_healthchecks_follow_the_probe_contract() -> None:
    for name in HOPTRACE_SERVICES - ONE_SHOT:
        service = _services()[name]
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "hoptrace", "probe"], name
        stages = _stages(service["command"])
        if stages:
            assert test[3:5] == ["ready", "--stage"] and test[5] in stages, f"{name}: {test}"
        else:
            assert test[3:] == ["live", "--monitor"], f"{name}: {test}"
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert 5 < grace <= 30, f"{name}: workers flush within 5 s of SIGTERM"
        assert service["init"] is True


def test_grafana_links_prometheus_exemplars_to_jaeger_traces() -> None:
    grafana = _services()["grafana"]
    datasources = {item["type"]: item for item in yaml.safe_load((PROVISIONING / "datasources" / "hoptrace.yaml").read_text())["datasources"]}
    prometheus, jaeger = datasources["prometheus"], datasources["jaeger"]
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert destination == {"name": "trace_id", "datasourceUid": jaeger["uid"], "urlDisplayLabel": "Trace in Jaeger"}
    env = grafana["environment"]
    assert prometheus["url"] == "${PROMETHEUS_URL}" and urlsplit(env["PROMETHEUS_URL"]).hostname == "prometheus"
    assert jaeger["url"] == "${JAEGER_URL}" and urlsplit(env["JAEGER_URL"]).port == _port(
        _services()["jaeger"]["environment"]["HOPTRACE_JAEGER_QUERY"]
    )
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "hoptrace.yaml").read_text())["providers"]
    mounted = {target for service, path, target in _bind_mounts() if service == "grafana" and path == DASHBOARDS}
    assert mounted == {provider["options"]["path"]}


def test_the_dockerfile_installs_hoptrace_as_a_non_root_entrypoint() -> None:
    dockerfile = (REPOSITORY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim\s*$", dockerfile, re.MULTILINE)
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", dockerfile, re.MULTILINE)
    assert "pip install ." in dockerfile
    user = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0", "a numeric non-root user, for runAsNonRoot"
    assert "HOPTRACE_STATE_DIR=/var/lib/hoptrace" in dockerfile
    assert 'ENTRYPOINT ["hoptrace"]' in dockerfile


def _dockerignore() -> list[str]:
    patterns = [line.strip() for line in (REPOSITORY / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "exceptions (!) are not modelled by _docker_context"
    return patterns


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, for the patterns this repository uses: a path matches itself, or **/ matches at any depth."""
    parts = relative.split("/")
    return any(fnmatch.fnmatch(relative, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(parts[-1], pattern[3:])) for pattern in patterns)


def _docker_context(destination: Path) -> Path:
    """A copy of the build context the root Dockerfile sees: the repository less .dockerignore."""
    patterns = _dockerignore()

    def skipped(folder: str, names: list[str]) -> list[str]:
        base = Path(folder).relative_to(REPOSITORY).as_posix()
        return [name for name in names if _ignored(name if base == "." else f"{base}/{name}", patterns)]

    shutil.copytree(REPOSITORY, destination, ignore=skipped)
    return destination


def test_the_docker_context_builds_the_package(tmp_path: Path) -> None:
    """The Dockerfile's `pip install .`, on exactly the files .dockerignore lets through: a wheel with the CLI, the example and deploy/."""
    context = _docker_context(tmp_path / "context")
    assert not (context / ".venv").exists() and not (context / "tests").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("hoptrace-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(name).decode() for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert {"hoptrace/cli.py", "hoptrace/examples/orders.py", "hoptrace/deploy/collector/otelcol.yaml"} <= names
    assert re.search(r"^hoptrace = hoptrace\.cli:main$", entry_points, re.MULTILINE), entry_points


def _compose_config() -> Path:
    """A `docker compose config` without Docker: compose-go's loader, built once into $HOPTRACE_STATE_DIR/bin."""
    binary = Path(os.environ.get("HOPTRACE_STATE_DIR") or REPOSITORY / ".hoptrace") / "bin" / f"compose-config-{COMPOSE_GO_VERSION}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: compose-go cannot be built to load deploy/compose/compose.yaml")
    with tempfile.TemporaryDirectory() as source:
        Path(source, "main.go").write_text(COMPOSE_CONFIG_GO)
        Path(source, "go.mod").write_text(
            f"module hoptrace.local/composeconfig\n\ngo 1.24\n\nrequire github.com/compose-spec/compose-go/v2 {COMPOSE_GO_VERSION}\n"
        )
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        for step in ([go, "mod", "tidy"], [go, "build", "-o", str(binary), "."]):
            result = subprocess.run(step, cwd=source, env=env, capture_output=True, text=True, timeout=600, check=False)
            if result.returncode != 0:
                pytest.skip(f"could not build compose-go {COMPOSE_GO_VERSION} ({' '.join(step[1:3])}): {result.stderr[-500:]}")
    return binary


def test_compose_go_loads_the_file_as_docker_compose_would() -> None:
    """Schema, interpolation, env files and depends_on, checked by the library `docker compose` itself uses."""
    env = {key: value for key, value in os.environ.items() if key != "HOPTRACE_JOBS"}
    result = subprocess.run([str(_compose_config()), str(COMPOSE_FILE)], cwd=COMPOSE_DIR, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    project = yaml.safe_load(result.stdout)
    assert set(project["services"]) == SERVICES
    assert project["services"]["publisher"]["command"][3:5] == ["--count", "200"]


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed: `docker compose config` not run")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        pytest.skip(f"the docker compose plugin is not installed ({version.stderr.strip().splitlines()[0]}): `docker compose config` not run")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
