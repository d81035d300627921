"""deploy/k8s: the kustomize builds of the base and each overlay, checked offline.

Every built object is validated against the Kubernetes JSON schemas of one Kubernetes
version (kubernetes-validate, strict: unknown fields are errors). KEDA's ScaledObjects are
custom resources outside those schemas: they are checked for what KEDA itself requires
(its CRD: scaleTargetRef.name, triggers with type and string metadata; its kafka and redis
scalers: the metadata keys they refuse to start without) and for naming exactly the topics,
consumer groups and Redis lists of the orders pipeline. No cluster and no broker needed.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from hoptrace.examples.orders import pipeline as orders
from hoptrace.pipeline.stages import CeleryTransport, KafkaTransport
from hoptrace.workers import membership

REPOSITORY = Path(__file__).resolve().parent.parent
K8S = REPOSITORY / "deploy" / "k8s"
BUILDS = ("base", "overlays/keda", "overlays/hpa")
KUBERNETES_VERSION = "1.32"
"""The Kubernetes API the manifests must be valid for (autoscaling/v2, apps/v1)."""
KUSTOMIZE_VERSION = "v5.5.0"
"""Installed with `go install` only when neither kubectl nor kustomize is on PATH (kubectl 1.32 embeds v5.5.0)."""
ORDERS_SPEC = "hoptrace.examples.orders:pipeline"
KEDA_API_VERSION = "keda.sh/v1alpha1"
FLUSH_BOUND_S = 5
"""Workers flush telemetry within this many seconds of SIGTERM."""

Object = dict[str, Any]


def _state_dir() -> Path:
    return Path(os.environ.get("HOPTRACE_STATE_DIR") or REPOSITORY / ".hoptrace")


def _kustomize() -> list[str]:
    """A command that builds a kustomization given as its last argument: kubectl, kustomize, or one go installs."""
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    installed = _state_dir() / "bin" / "kustomize"
    if not installed.exists():
        go = shutil.which("go")
        if go is None:
            pytest.skip("cannot build deploy/k8s: no kubectl, kustomize or go on PATH")
        result = subprocess.run(
            [go, "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
            env={**os.environ, "GOBIN": str(installed.parent)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(
                f"cannot build deploy/k8s: no kubectl or kustomize, and go install of kustomize {KUSTOMIZE_VERSION} failed: {result.stderr[-500:]}"
            )
    return [str(installed), "build"]


@pytest.fixture(scope="module")
def built() -> dict[str, list[Object]]:
    """The objects of every build, by its path under deploy/k8s."""
    command = _kustomize()
    objects = {}
    for name in BUILDS:
        result = subprocess.run([*command, str(K8S / name)], capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"kustomize build deploy/k8s/{name} failed:\n{result.stderr}"
        objects[name] = [item for item in yaml.safe_load_all(result.stdout) if item]
    return objects


def _of_kind(objects: list[Object], kind: str) -> dict[str, Object]:
    return {item["metadata"]["name"]: item for item in objects if item["kind"] == kind}


def _workloads(objects: list[Object]) -> dict[str, Object]:
    """The objects that run pods: Deployments (the Celery worker, the monitor, the collector) and StatefulSets (the Kafka stages)."""
    return {**_of_kind(objects, "Deployment"), **_of_kind(objects, "StatefulSet")}


def _containers(deployment: Object) -> list[Object]:
    return deployment["spec"]["template"]["spec"]["containers"]


def _hoptrace_container(deployment: Object) -> Object | None:
    """The container running the hoptrace image, None for other Deployments (the collector)."""
    return next((c for c in _containers(deployment) if c["image"].split("/")[-1].startswith("hoptrace:")), None)


def _stages(args: list[str]) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == "--stage"]


def _workers(objects: list[Object]) -> dict[str, list[str]]:
    """Each worker Deployment's name and the stages it runs."""
    workers = {}
    for name, deployment in _workloads(objects).items():
        container = _hoptrace_container(deployment)
        if container is not None and container["args"][0] == "worker":
            workers[name] = _stages(container["args"])
    return workers


def _secret_data(secret: Object) -> dict[str, str]:
    """A Secret's values, decoded."""
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}


def _env(objects: list[Object], container: Object) -> dict[str, Any]:
    """The container's environment: its ConfigMaps' and Secrets' data, then its own variables (a value, or the valueFrom mapping)."""
    config_maps, secrets = _of_kind(objects, "ConfigMap"), _of_kind(objects, "Secret")
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env.update(_secret_data(secrets[source["secretRef"]["name"]]))
        else:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", variable.get("valueFrom"))
    return env


def _scaled_objects(objects: list[Object]) -> list[Object]:
    return [item for item in objects if item["kind"] == "ScaledObject"]


by_build = pytest.mark.parametrize("build", BUILDS)


def test_the_collector_config_is_the_shared_one() -> None:
    shared = REPOSITORY / "deploy" / "collector" / "otelcol.yaml"
    copy = K8S / "base" / "otelcol.yaml"
    assert copy.read_bytes() == shared.read_bytes(), (
        "deploy/k8s/base/otelcol.yaml differs from deploy/collector/otelcol.yaml (kustomize cannot load files outside its folder); "
        "run: cp deploy/collector/otelcol.yaml deploy/k8s/base/otelcol.yaml"
    )


@by_build
def test_every_object_validates_against_the_kubernetes_schemas(built: dict[str, list[Object]], build: str) -> None:
    """Strict mode: an unknown or misspelt field fails as much as a wrong type."""
    errors = []
    for item in built[build]:
        if item["apiVersion"] == KEDA_API_VERSION:
            continue  # a CRD: see the KEDA tests
        name = f"{item['kind']}/{item['metadata']['name']}"
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{name}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{name}: {error.message}")
    assert not errors, "\n".join(errors)


@by_build
def test_one_deployment_per_kafka_stage_and_one_for_the_celery_stages(built: dict[str, list[Object]], build: str) -> None:
    kafka = {stage.name for stage in orders if isinstance(stage.transport, KafkaTransport)}
    celery = {stage.name for stage in orders if isinstance(stage.transport, CeleryTransport)}
    runs = sorted(tuple(sorted(stages)) for stages in _workers(built[build]).values())
    assert runs == sorted([(name,) for name in kafka] + [tuple(sorted(celery))])
    for deployment in _workloads(built[build]).values():
        if (container := _hoptrace_container(deployment)) is not None:
            assert container["args"][1] == ORDERS_SPEC
            assert "--no-monitor" in container["args"] or container["args"][0] == "monitor"


@by_build
def test_exactly_one_monitor_replica(built: dict[str, list[Object]], build: str) -> None:
    deployments = _workloads(built[build])
    monitors = [d for d in deployments.values() if (c := _hoptrace_container(d)) is not None and c["args"][0] == "monitor"]
    assert len(monitors) == 1
    (monitor,) = monitors
    assert monitor["spec"]["replicas"] == 1
    assert monitor["spec"]["strategy"] == {"type": "Recreate"}, "two monitors at once would report every gauge twice"
    scaled = {item["spec"]["scaleTargetRef"]["name"] for item in built[build] if item["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")}
    assert monitor["metadata"]["name"] not in scaled


@by_build
def test_every_container_has_requests_limits_and_both_probes(built: dict[str, list[Object]], build: str) -> None:
    for name, deployment in _workloads(built[build]).items():
        for container in _containers(deployment):
            where = f"{name}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"].get(kind, {})), f"{where}: {kind}"
            assert "readinessProbe" in container and "livenessProbe" in container, where


@by_build
def test_hoptrace_probes_ask_hoptrace_about_the_stages_the_container_runs(built: dict[str, list[Object]], build: str) -> None:
    """The probe contract: `hoptrace probe ready|live --stage NAME` for workers, `hoptrace probe live --monitor` for the monitor."""
    for name, deployment in _workloads(built[build]).items():
        container = _hoptrace_container(deployment)
        if container is None:
            continue
        stages = _stages(container["args"])
        for probe, verb in (("startupProbe", "live"), ("readinessProbe", "ready"), ("livenessProbe", "live")):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["hoptrace", "probe"], f"{name} {probe}"
            if stages:
                assert command[2] == verb and command[3] == "--stage" and command[4] in stages, f"{name} {probe}: {command}"
            else:
                assert command[2:] == ["live", "--monitor"], f"{name} {probe}: {command}"
            assert container[probe].get("timeoutSeconds", 1) >= 3, f"{name} {probe}: a Python start can take more than 1 s"


@by_build
def test_termination_grace_covers_the_flush_bound(built: dict[str, list[Object]], build: str) -> None:
    for name, deployment in _workloads(built[build]).items():
        grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds")
        assert grace is not None, f"{name}: terminationGracePeriodSeconds"
        assert FLUSH_BOUND_S < grace <= 30, f"{name}: {grace} s"


@by_build
def test_hoptrace_pods_export_to_the_collector_with_their_own_identity(built: dict[str, list[Object]], build: str) -> None:
    objects = built[build]
    services = _of_kind(objects, "Service")
    service_names = []
    for name, deployment in _workloads(objects).items():
        container = _hoptrace_container(deployment)
        if container is None:
            continue
        env = _env(objects, container)
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.hostname in services, f"{name}: {endpoint.hostname} is no Service of the build"
        assert endpoint.port in {port["port"] for port in services[endpoint.hostname]["spec"]["ports"]}
        assert env["HOPTRACE_NAMESPACE"] == "", "the KEDA triggers name the pipeline's topics, groups and lists unprefixed"
        service_names.append(env["OTEL_SERVICE_NAME"])
        # Downward API variables must come before the $(VAR) references to them.
        names = [variable["name"] for variable in container["env"]]
        attributes = dict(pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        for key, field in (("k8s.pod.name", "metadata.name"), ("k8s.namespace.name", "metadata.namespace")):
            variable = attributes[key].removeprefix("$(").removesuffix(")")
            assert env[variable] == {"fieldRef": {"fieldPath": field}}
            assert names.index(variable) < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert len(service_names) == len(set(service_names)), f"one OTEL_SERVICE_NAME per Deployment: {service_names}"


@by_build
def test_the_collector_listens_on_all_addresses_and_exports_to_the_configured_jaeger(built: dict[str, list[Object]], build: str) -> None:
    objects = built[build]
    collector = _of_kind(objects, "Deployment")["otel-collector"]
    (container,) = _containers(collector)
    env = _env(objects, container)
    (volume,) = collector["spec"]["template"]["spec"]["volumes"]
    config = yaml.safe_load(_of_kind(objects, "ConfigMap")[volume["configMap"]["name"]]["data"]["otelcol.yaml"])
    listens = [
        config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        config["extensions"]["health_check"]["endpoint"],
        config["exporters"]["prometheus"]["endpoint"],
    ]
    for placeholder in listens:
        variable = placeholder.removeprefix("${env:").split(":-")[0]
        assert env.get(variable, "").startswith("0.0.0.0:"), f"{variable} must listen beyond loopback in a pod"
    assert ":" in env["HOPTRACE_JAEGER_OTLP"] and "://" not in env["HOPTRACE_JAEGER_OTLP"], "host:port of Jaeger's OTLP/gRPC receiver"


def test_the_two_redis_addresses_name_one_server(built: dict[str, list[Object]]) -> None:
    """hoptrace reads the URL (a credential: from the Secret), KEDA's redis scaler the host:port: they must agree."""
    for name, deployment in _workloads(built["base"]).items():
        if (container := _hoptrace_container(deployment)) is not None:
            env = _env(built["base"], container)
            url = urlsplit(env["HOPTRACE_REDIS_URL"])
            assert f"{url.hostname}:{url.port or 6379}" == env["REDIS_ADDRESS"], name
            assert url.path in ("", "/", "/0"), "KEDA's triggers read database 0"


@by_build
def test_credentials_come_from_a_secret_never_a_config_map(built: dict[str, list[Object]], build: str) -> None:
    """The Redis URL (which holds its password) and anything named like a password are in the Secret, which every hoptrace pod reads."""
    for name, config_map in _of_kind(built[build], "ConfigMap").items():
        leaked = [key for key in config_map.get("data", {}) if key == "HOPTRACE_REDIS_URL" or "PASSWORD" in key or "SECRET" in key]
        assert not leaked, f"ConfigMap {name} holds {leaked}"
    secrets = _of_kind(built[build], "Secret")
    assert "HOPTRACE_REDIS_URL" in _secret_data(secrets["hoptrace-credentials"])
    for name, deployment in _workloads(built[build]).items():
        if (container := _hoptrace_container(deployment)) is not None:
            assert {"secretRef": {"name": "hoptrace-credentials"}} in container["envFrom"], name


def test_keda_scalers_authenticate_from_the_same_secret(built: dict[str, list[Object]]) -> None:
    """Every trigger names a TriggerAuthentication, and every key those read is in the Secret the pods read."""
    objects = built["overlays/keda"]
    auths = {item["metadata"]["name"]: item for item in objects if item["kind"] == "TriggerAuthentication"}
    secrets = {name: _secret_data(secret) for name, secret in _of_kind(objects, "Secret").items()}
    for item in _scaled_objects(objects):
        for trigger in item["spec"]["triggers"]:
            auth = auths.get(trigger.get("authenticationRef", {}).get("name"))
            assert auth is not None and auth["apiVersion"] == KEDA_API_VERSION, f"{item['metadata']['name']}: {trigger['type']}"
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets.get(ref["name"], {}), f"{auth['metadata']['name']}: no key {ref['key']} in Secret {ref['name']}"
    assert {ref["parameter"] for ref in auths["hoptrace-kafka"]["spec"]["secretTargetRef"]} == {"sasl", "tls"}
    assert secrets["hoptrace-credentials"]["KAFKA_SASL"] in ("none", "plaintext", "scram_sha256", "scram_sha512", "oauthbearer")


# KEDA


def _required_kafka_metadata(metadata: Mapping[str, str]) -> list[str]:
    """What KEDA's kafka scaler refuses to start without: bootstrapServers and consumerGroup (each may come FromEnv)."""
    return [key for key in ("bootstrapServers", "consumerGroup") if not (metadata.get(key) or metadata.get(key + "FromEnv"))]


def _required_redis_metadata(metadata: Mapping[str, str]) -> list[str]:
    """What KEDA's redis (lists) scaler refuses to start without: listName, and an address (address/addresses, or host and port)."""
    missing = [] if metadata.get("listName") else ["listName"]
    addressed = any(metadata.get(key) or metadata.get(key + "FromEnv") for key in ("address", "addresses"))
    hosted = all(metadata.get(key) or metadata.get(key + "FromEnv") for key in ("host", "port"))
    return missing + ([] if addressed or hosted else ["address"])


REQUIRED_METADATA = {"kafka": _required_kafka_metadata, "redis": _required_redis_metadata}
NUMERIC_METADATA = ("lagThreshold", "activationLagThreshold", "listLength", "activationListLength", "databaseIndex")


def test_keda_scaled_objects_have_what_keda_requires(built: dict[str, list[Object]]) -> None:
    objects = built["overlays/keda"]
    deployments = _workloads(objects)
    scaled = _scaled_objects(objects)
    assert scaled
    for item in scaled:
        name = item["metadata"]["name"]
        assert item["apiVersion"] == KEDA_API_VERSION and item["kind"] == "ScaledObject", name
        target = item["spec"]["scaleTargetRef"]
        assert target["name"] in deployments, f"{name}: no workload {target['name']}"
        kind = deployments[target["name"]]["kind"]
        assert target.get("kind", "Deployment") == kind, f"{name}: {target['name']} is a {kind}"
        assert item["spec"].get("minReplicaCount", 0) <= item["spec"]["maxReplicaCount"]
        assert item["spec"]["triggers"], f"{name}: no triggers"
        (container,) = [c for c in _containers(deployments[target["name"]]) if c["name"] == target.get("envSourceContainerName", c["name"])]
        env = _env(objects, container)
        for trigger in item["spec"]["triggers"]:
            metadata = trigger["metadata"]
            assert all(isinstance(value, str) for value in metadata.values()), f"{name}: KEDA's CRD takes string metadata only: {metadata}"
            missing = REQUIRED_METADATA[trigger["type"]](metadata)
            assert not missing, f"{name}: its {trigger['type']} trigger lacks {missing}"
            for key in NUMERIC_METADATA:
                assert metadata.get(key, "0").isdigit(), f"{name}: {key}={metadata[key]!r}"
            for key, variable in metadata.items():
                if key.endswith("FromEnv"):
                    assert env.get(variable), f"{name}: {key} names {variable}, which {target['name']}'s container does not define"


def test_keda_triggers_name_the_orders_topics_groups_and_lists(built: dict[str, list[Object]]) -> None:
    objects = built["overlays/keda"]
    workers = _workers(objects)
    by_target = {item["spec"]["scaleTargetRef"]["name"]: item["spec"]["triggers"] for item in _scaled_objects(objects)}
    assert set(by_target) == set(workers), "every worker Deployment and nothing else is scaled"
    for deployment, stages in workers.items():
        transports = [orders[stage].transport for stage in stages]
        expected = sorted(("kafka", t.topic, t.group) if isinstance(t, KafkaTransport) else ("redis", t.queue, "") for t in transports)
        triggers = sorted(
            (t["type"], t["metadata"].get("topic") or t["metadata"].get("listName"), t["metadata"].get("consumerGroup", ""))
            for t in by_target[deployment]
        )
        assert triggers == expected, deployment
        for trigger in by_target[deployment]:
            if trigger["type"] == "kafka":
                assert trigger["metadata"].get("offsetResetPolicy") == "earliest", "the workers start a new group at the earliest offset"


@pytest.mark.parametrize("build", ["overlays/keda", "overlays/hpa"])
def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(built: dict[str, list[Object]], build: str) -> None:
    objects = built[build]
    deployments = _workloads(objects)
    targets = {item["spec"]["scaleTargetRef"]["name"] for item in objects if item["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")}
    assert targets == set(_workers(objects))
    for name in targets:
        assert "replicas" not in deployments[name]["spec"], f"{name}: `kubectl apply` would reset the autoscaler's replica count"


def test_hpa_overlay_scales_kafka_stages_no_further_than_useful(built: dict[str, list[Object]]) -> None:
    """An HPA has no notion of partitions: maxReplicas is the only cap on idle Kafka consumers."""
    objects = built["overlays/hpa"]
    workers = _workers(objects)
    workloads = _workloads(objects)
    for name, hpa in _of_kind(objects, "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": workloads[name]["kind"], "name": name}
        if all(isinstance(orders[stage].transport, KafkaTransport) for stage in workers[name]):
            assert hpa["spec"]["maxReplicas"] <= 3, f"{name}: the topics are created with 3 partitions (deploy/k8s/README.md)"


def test_a_kafka_stage_pod_and_its_replacement_present_the_same_static_member_id(
    built: dict[str, list[Object]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Kafka stages run as StatefulSets: pod ``<name>-<ordinal>``, whose hostname Kubernetes sets to that name, the same for the
    pod that replaces it. ``membership.claim`` makes the group.instance.id from the hostname, so the replacement (a new /tmp, maybe
    on another node) presents its predecessor's id, and the broker hands it the partitions at once; each ordinal has its own id."""
    objects = built["base"]
    workloads = _workloads(objects)
    for name, stages in _workers(objects).items():
        transports = [orders[stage].transport for stage in stages]
        if not all(isinstance(transport, KafkaTransport) for transport in transports):
            assert workloads[name]["kind"] == "Deployment", f"{name}: Celery workers have no static membership"
            continue
        assert (workloads[name]["kind"], workloads[name]["spec"]["podManagementPolicy"]) == ("StatefulSet", "Parallel"), name
        [stage], [transport] = stages, transports
        ids = []
        for ordinal in range(3):  # the HPA overlay's maxReplicas
            monkeypatch.setattr(membership.socket, "gethostname", lambda pod=f"{name}-{ordinal}": pod)
            pod, replacement = (membership.claim(transport.group, stage, tmp_path / f"{name}-{ordinal}-{n}") for n in (1, 2))
            assert pod.instance_id == replacement.instance_id == f"hoptrace-{stage}-{name}-{ordinal}-0"
            ids.append(pod.instance_id)
            pod.lock.close()
            replacement.lock.close()
        assert len(set(ids)) == 3, ids
