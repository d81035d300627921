"""The real observability stack: the orders pipeline exports through a real Collector into a real Jaeger and Prometheus.

The stack is started by the project's own script (``hoptrace services up observability``, which runs
deploy/local/observability.sh) on free loopback ports, with its own state folder: only its binaries
are shared with the checkout's ``.hoptrace/observability/bin`` (built there when missing: the cold
path, ~10 minutes). Skipped only where Go or Prometheus cannot be installed.

One run of the orders pipeline (workers and monitor, real Kafka and Redis) serves every test:
24 plain jobs, 3 that fail once at ``charge`` (retried), 2 that fail every attempt at ``ship``
(dead-lettered), and one message with a broken ``traceparent`` sent by hand (a new root trace).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote, urlencode
from urllib.request import urlopen

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from hoptrace.pipeline.settings import Settings
from hoptrace.view.critical_path import Cause
from hoptrace.view.jaeger import JaegerError, JaegerQuery
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.prometheus import PrometheusError, PrometheusQuery
from hoptrace.view.prometheus_stages import PrometheusStages
from tests.conftest import delete_namespace, free_port, free_ports, run_hoptrace
from tests.processes import running
from tests.traces import PublishedJob, published_jobs, wait_for, wait_for_outbox

pytestmark = pytest.mark.timeout(1500)  # the first test also waits for a cold build of the stack

REPOSITORY = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPOSITORY / "deploy" / "grafana" / "dashboards").glob("*.json"))
ORDERS = "hoptrace.examples.orders:pipeline"
BUILD_TIMEOUT_S = 1300
ADDRESSES = (
    "HOPTRACE_COLLECTOR_GRPC",
    "HOPTRACE_COLLECTOR_HTTP",
    "HOPTRACE_COLLECTOR_HEALTH",
    "HOPTRACE_COLLECTOR_PROMETHEUS",
    "HOPTRACE_COLLECTOR_TELEMETRY",
    "HOPTRACE_JAEGER_OTLP",
    "HOPTRACE_JAEGER_QUERY",
    "HOPTRACE_JAEGER_QUERY_GRPC",
    "HOPTRACE_PROMETHEUS",
)


def _addresses() -> dict[str, str]:
    """Every address variable of the stack, each on a loopback port of its own that nothing listens on."""
    return {variable: f"127.0.0.1:{port}" for variable, port in zip(ADDRESSES, free_ports(len(ADDRESSES)), strict=True)}


PLAIN, FLAKY, FAILING = 24, 3, 2
MESSAGES = PLAIN + FLAKY + FAILING + 1  # and the one with a broken traceparent
DELIVERED = MESSAGES - FAILING
STAGES = ("validate", "charge", "ship", "notify")
ATTEMPTS = {"validate": MESSAGES, "charge": MESSAGES + FLAKY, "ship": MESSAGES - FAILING + 3 * FAILING, "notify": DELIVERED}
CONSUMED = {"validate": MESSAGES, "charge": MESSAGES, "ship": MESSAGES, "notify": DELIVERED}
FAILED_ATTEMPTS = {"charge": FLAKY, "ship": 3 * FAILING}
RETRIES = {"charge": FLAKY, "ship": 2 * FAILING}

# hoptrace's metrics (README "Metrics") and the names Prometheus has them under, through the Collector.
PROMETHEUS_NAMES = {
    "messaging.client.sent.messages": ["messaging_client_sent_messages_total"],
    "messaging.client.consumed.messages": ["messaging_client_consumed_messages_total"],
    "messaging.client.operation.duration": [f"messaging_client_operation_duration_seconds_{part}" for part in ("bucket", "sum", "count")],
    "messaging.process.duration": [f"messaging_process_duration_seconds_{part}" for part in ("bucket", "sum", "count")],
    "hoptrace.queue.wait": [f"hoptrace_queue_wait_seconds_{part}" for part in ("bucket", "sum", "count")],
    "hoptrace.job.latency": [f"hoptrace_job_latency_seconds_{part}" for part in ("bucket", "sum", "count")],
    "hoptrace.stage.retries": ["hoptrace_stage_retries_total"],
    "hoptrace.stage.dead_lettered": ["hoptrace_stage_dead_lettered_total"],
    "hoptrace.propagation.fallbacks": ["hoptrace_propagation_fallbacks_total"],
    "hoptrace.stage.in_flight": ["hoptrace_stage_in_flight"],
    "hoptrace.queue.depth": ["hoptrace_queue_depth"],
    "hoptrace.kafka.consumer.lag": ["hoptrace_kafka_consumer_lag"],
    "hoptrace.kafka.consumer.lag_seconds": ["hoptrace_kafka_consumer_lag_seconds"],
    "hoptrace.queue.oldest_age": ["hoptrace_queue_oldest_age_seconds"],
}


@dataclass(frozen=True)
class Stack:
    """The observability stack of this module: its state folder and addresses, as ``HOPTRACE_*`` variables."""

    env: dict[str, str]

    @property
    def prometheus(self) -> str:
        """Prometheus' URL."""
        return f"http://{self.env['HOPTRACE_PROMETHEUS']}"

    @property
    def jaeger(self) -> str:
        """Jaeger's query URL."""
        return f"http://{self.env['HOPTRACE_JAEGER_QUERY']}"


@dataclass(frozen=True)
class Run:
    """The orders pipeline's run: its namespace, its published jobs, and when it began."""

    namespace: str
    plain: list[PublishedJob]
    flaky: list[PublishedJob]
    failing: list[PublishedJob]
    started_s: float

    @property
    def jobs(self) -> list[PublishedJob]:
        """Every published job."""
        return [*self.plain, *self.flaky, *self.failing]

    def window(self) -> str:
        """A PromQL range that holds the whole run, as of now."""
        return f"{math.ceil(time.time() - self.started_s) + 30}s"


def _hoptrace(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hoptrace", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def _skip_where_not_installable(output: str) -> None:
    """Skip (saying why) when the script could not build or install for want of Go or Prometheus; return otherwise."""
    for missing in ("go is not installed", "prometheus is not installed", "GOPROXY"):
        line = next((line for line in output.splitlines() if missing in line), None)
        if line is not None:
            pytest.skip(f"the observability stack cannot be installed here: {line.removeprefix('error: ')}")


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The Collector, Jaeger and Prometheus, started by ``hoptrace services up observability`` on free ports; stopped after."""
    state = tmp_path_factory.mktemp("observability-state")
    binaries = settings.state_dir / "observability" / "bin"
    binaries.mkdir(parents=True, exist_ok=True)
    (state / "observability").mkdir()
    (state / "observability" / "bin").symlink_to(binaries.resolve(), target_is_directory=True)
    env = {
        "HOPTRACE_STATE_DIR": str(state),
        **_addresses(),
        "HOPTRACE_PROMETHEUS_SCRAPE_INTERVAL": "1s",
        "HOPTRACE_SPANMETRICS_FLUSH_INTERVAL": "1s",
    }
    started = time.monotonic()
    up = _hoptrace(env, "services", "up", "observability", timeout=BUILD_TIMEOUT_S)
    if up.returncode != 0:
        _skip_where_not_installable(up.stdout + up.stderr)
        pytest.fail(f"hoptrace services up observability failed:\n{up.stdout}\n{up.stderr}")
    print(f"observability stack up in {time.monotonic() - started:.1f} s:\n{up.stdout}")
    try:
        yield Stack(env)
    finally:
        down = _hoptrace(env, "services", "down", "observability")
        assert down.returncode == 0, down.stdout + down.stderr
        assert down.stdout.count("stopped (pid") == 3, down.stdout


def _send_broken_traceparent(settings: Settings, namespace: str) -> None:
    """One order straight into validate's topic, with a traceparent no one can parse."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    try:
        value = json.dumps({"order_id": "broken-headers"}).encode()
        producer.send(f"{namespace}orders.placed", value=value, headers=[("traceparent", b"00-not-a-trace")]).get(timeout=30)
    finally:
        producer.close()


@pytest.fixture(scope="module")
def run(stack: Stack, settings: Settings, kafka_admin: KafkaAdminClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The orders pipeline's workers and monitor, exporting to the stack's Collector; the jobs published and delivered."""
    namespace = f"obs{uuid.uuid4().hex[:8]}."
    env = {
        "HOPTRACE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "HOPTRACE_NAMESPACE": namespace,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{stack.env['HOPTRACE_COLLECTOR_GRPC']}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        # Longer than the scrape interval: a point's exemplars are in one export only, and must be scraped.
        "OTEL_METRIC_EXPORT_INTERVAL": "2000",
        "PYTHONUNBUFFERED": "1",
        "HOPTRACE_JAEGER_URL": stack.jaeger,  # the monitor counts finished jobs' critical paths from it
    }
    started = time.time()
    log = tmp_path_factory.mktemp("orders") / "worker.log"
    try:
        with running([sys.executable, "-m", "hoptrace", "worker", ORDERS], log, env, ready="ready."):
            publish = ("publish", ORDERS, "validate", "--count")
            plain = published_jobs(run_hoptrace(env, *publish, str(PLAIN)).stdout)
            flaky = published_jobs(run_hoptrace(env, *publish, str(FLAKY), "--payload", '{"order_id": "flaky-{n}", "flaky_at": "charge"}').stdout)
            failing = published_jobs(run_hoptrace(env, *publish, str(FAILING), "--payload", '{"order_id": "failing-{n}", "fail_at": "ship"}').stdout)
            _send_broken_traceparent(settings, namespace)
            assert len(wait_for_outbox(settings, namespace, DELIVERED)) == DELIVERED
            yield Run(namespace, plain, flaky, failing, started)
    finally:
        delete_namespace(settings, kafka_admin, namespace)


def _expected_spans(namespace: str, kind: str) -> Counter[tuple[str, str, str]]:
    """(name, kind, status) of the spans of one job: plain, flaky (fails once at charge) or failing (every attempt at ship)."""
    hops = ("orders.placed", "payments", "orders.charged", "notifications")
    spans: Counter[tuple[str, str, str]] = Counter()
    for hop in hops[: 3 if kind == "failing" else 4]:
        spans[(f"send {namespace}{hop}", "PRODUCER", "UNSET")] += 1
        spans[(f"process {namespace}{hop}", "CONSUMER", "UNSET")] += 1
    if kind == "flaky":
        spans[(f"process {namespace}payments", "CONSUMER", "ERROR")] += 1
    if kind == "failing":
        spans[(f"process {namespace}orders.charged", "CONSUMER", "UNSET")] -= 1
        spans[(f"process {namespace}orders.charged", "CONSUMER", "ERROR")] += 3
        spans[(f"send {namespace}orders.charged.dead-letter", "PRODUCER", "UNSET")] += 1
    return +spans


def _shape(spans: list[ReceivedSpan]) -> Counter[tuple[str, str, str]]:
    return Counter((span.name, span.kind, span.status_code) for span in spans)


def _jaeger_trace(jaeger: JaegerQuery, trace_id: str) -> list[ReceivedSpan]:
    try:
        return jaeger.trace(trace_id)
    except JaegerError:
        return []


@pytest.fixture(scope="module")
def settled(stack: Stack, run: Run) -> Run:
    """The run, once Prometheus counted every attempt (twice), the monitor saw empty queues and Jaeger holds every span.

    Or after the waits ran out: the tests then say what is missing.
    """
    prometheus, jaeger = PrometheusQuery(stack.prometheus), JaegerQuery(stack.jaeger)
    attempts = 'sum by (hoptrace_stage) (messaging_process_duration_seconds_count{hoptrace_pipeline="orders"})'
    # rate() needs two samples of a series: the last ones to appear (the dead letters') must have been scraped twice.
    sampled = 'min(count_over_time(hoptrace_stage_dead_lettered_total{hoptrace_pipeline="orders"}[10m]))'
    backlog = '{__name__=~"hoptrace_queue_depth|hoptrace_kafka_consumer_lag.*|hoptrace_queue_oldest_age_seconds", hoptrace_pipeline="orders"}'

    def counted() -> bool:
        return {sample.labels["hoptrace_stage"]: sample.value for sample in prometheus.query(attempts)} == ATTEMPTS

    def traced() -> bool:
        kinds = [("plain", run.plain), ("flaky", run.flaky), ("failing", run.failing)]
        return all(_shape(_jaeger_trace(jaeger, job.trace_id)) == _expected_spans(run.namespace, kind) for kind, jobs in kinds for job in jobs)

    wait_for(counted, 90, interval=1)
    wait_for(lambda: [sample.value for sample in prometheus.query(sampled)] >= [2], 30, interval=0.5)
    # The monitor's latest report: nothing left in any queue or partition.
    wait_for(lambda: {sample.value for sample in prometheus.query(backlog)} == {0}, 30, interval=0.5)
    wait_for(traced, 90, interval=1)
    return run


def test_services_status_reports_the_stack(stack: Stack) -> None:
    result = _hoptrace({**stack.env, "COLUMNS": "250"}, "services", "status", "observability")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("healthy") == 3
    for product in ("OpenTelemetry Collector 0.165.1", "Jaeger v2.13.0", "Prometheus 2."):
        assert product in result.stdout
    assert stack.env["HOPTRACE_COLLECTOR_GRPC"] in result.stdout


def test_services_status_says_when_the_stack_is_down(tmp_path: Path) -> None:
    env = {"HOPTRACE_STATE_DIR": str(tmp_path), "COLUMNS": "250", **_addresses()}
    result = _hoptrace(env, "services", "status", "observability")
    assert result.returncode == 1
    assert [line.split()[1] for line in result.stdout.splitlines() if " down " in line] == ["collector", "jaeger", "prometheus"]
    assert result.stdout.count("not answering at http://127.0.0.1:") == 3


def test_prometheus_errors_say_what_to_do(stack: Stack) -> None:
    with pytest.raises(PrometheusError, match=r"refused /api/v1/query \(bad_data\): invalid parameter \"query\": .*unclosed left parenthesis"):
        PrometheusQuery(stack.prometheus).query("sum(")
    port = free_port()
    with pytest.raises(
        PrometheusError, match=rf"^cannot reach Prometheus at http://127\.0\.0\.1:{port} \(.*refused.*\): start it, or give the address"
    ):
        PrometheusQuery(f"http://127.0.0.1:{port}", timeout_s=2).query("up")
    with pytest.raises(PrometheusError, match=rf"^{stack.jaeger}/api/v1/query did not answer with Prometheus' JSON: is {stack.jaeger} the address"):
        PrometheusQuery(stack.jaeger).query("up")  # Jaeger's UI answers any path with a page
    result = _hoptrace({"COLUMNS": "250"}, "stages", "--prometheus", "localhost:9090")
    assert (result.returncode, result.stdout.strip()) == (
        1,
        "'localhost:9090' is not a Prometheus URL: give the address of Prometheus' HTTP API (port 9090 by default, e.g. http://localhost:9090)",
    )


def test_jaeger_has_each_job_as_one_trace_with_all_four_hops(stack: Stack, settled: Run) -> None:
    jaeger = JaegerQuery(stack.jaeger)
    for kind, jobs in (("plain", settled.plain), ("flaky", settled.flaky), ("failing", settled.failing)):
        assert len(jobs) == {"plain": PLAIN, "flaky": FLAKY, "failing": FAILING}[kind]
        for job in jobs:
            spans = jaeger.trace(job.trace_id)
            assert _shape(spans) == _expected_spans(settled.namespace, kind), (kind, job)
            by_id = {span.span_id: span for span in spans}
            [root] = [span for span in spans if span.parent_span_id is None]
            assert root.name == f"send {settled.namespace}orders.placed"
            assert all(span.parent_span_id in by_id for span in spans if span is not root)
            assert {span.attributes["hoptrace.job.id"] for span in spans} == {job.job_id}
            assert {span.resource["service.name"] for span in spans} == {"orders-publisher", "orders-worker"}
    # The message with the broken traceparent was processed anyway, as a trace of its own that starts at validate.
    others = [summary for summary in jaeger.recent_traces(limit=100) if summary.trace_id not in {job.trace_id for job in settled.jobs}]
    assert [(summary.root_name, summary.span_count, summary.stages) for summary in others] == [
        (f"process {settled.namespace}orders.placed", 7, STAGES)
    ]


@pytest.mark.parametrize("metric", sorted(PROMETHEUS_NAMES))
def test_prometheus_has_every_hoptrace_metric_under_its_documented_name(stack: Stack, settled: Run, metric: str) -> None:
    prometheus = PrometheusQuery(stack.prometheus)
    for name in PROMETHEUS_NAMES[metric]:
        found = prometheus.query(f'{name}{{hoptrace_pipeline="orders"}}')
        assert found, f"no {name} (from {metric}) in Prometheus"
        assert all(sample.labels.get("job", "").startswith("orders-") and sample.labels.get("instance") for sample in found)


def _per_stage(prometheus: PrometheusQuery, promql: str) -> dict[str, float]:
    return {sample.labels["hoptrace_stage"]: sample.value for sample in prometheus.query(promql)}


def test_prometheus_counts_exactly_what_the_run_did(stack: Stack, settled: Run) -> None:
    prometheus, orders = PrometheusQuery(stack.prometheus), 'hoptrace_pipeline="orders"'
    assert _per_stage(prometheus, f"sum by (hoptrace_stage) (messaging_client_consumed_messages_total{{{orders}}})") == CONSUMED
    assert _per_stage(prometheus, f"sum by (hoptrace_stage) (messaging_process_duration_seconds_count{{{orders}}})") == ATTEMPTS
    failed = f'sum by (hoptrace_stage) (messaging_process_duration_seconds_count{{{orders}, error_type="OrderRejected"}})'
    assert _per_stage(prometheus, failed) == FAILED_ATTEMPTS
    assert _per_stage(prometheus, f"sum by (hoptrace_stage) (hoptrace_stage_retries_total{{{orders}}})") == RETRIES
    assert _per_stage(prometheus, f"sum by (hoptrace_stage) (hoptrace_stage_dead_lettered_total{{{orders}}})") == {"ship": FAILING}
    assert _per_stage(prometheus, f"sum by (hoptrace_stage) (hoptrace_propagation_fallbacks_total{{{orders}}})") == {"validate": 1}
    sent = {
        sample.labels["messaging_destination_name"].removeprefix(settled.namespace): sample.value
        for sample in prometheus.query(f"sum by (messaging_destination_name) (messaging_client_sent_messages_total{{{orders}}})")
    }
    assert sent == {
        "orders.placed": MESSAGES - 1,
        "payments": MESSAGES,
        "orders.charged": MESSAGES,
        "notifications": DELIVERED,
        "orders.charged.dead-letter": FAILING,
    }


def _dashboard_targets(datasource: str) -> list[Any]:
    """(dashboard file, panel title, target) of every panel target of DATASOURCE, to parametrize over."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", ()):
                if target["datasource"]["uid"] == datasource:
                    found.append(pytest.param(path.name, panel, target, id=f"{path.stem}: {panel['title']} [{target['refId']}]"))
    return found


def _variables(run: Run) -> dict[str, str]:
    """What Grafana would put for each template variable and interval, for this run."""
    return {"pipeline": "orders", "stage": ".*", "service": "orders-worker", "__rate_interval": run.window(), "__range": run.window()}


def _substitute(text: str, values: dict[str, str]) -> str:
    """TEXT with Grafana's ``$name`` and ``${name}`` replaced by VALUES (longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        text = text.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return text


def test_the_dashboards_use_the_provisioned_data_sources_and_template_variables() -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana/dashboards/"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert {variable["name"] for variable in dashboard["templating"]["list"]} >= {"pipeline", "stage"}
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in ("prometheus", "jaeger"), panel["title"]
                assert panel["description"], panel["title"]
            for target in panel.get("targets", ()):
                assert target["datasource"] == panel["datasource"], panel["title"]
                if target["datasource"]["uid"] == "prometheus":
                    assert 'hoptrace_pipeline=~"$pipeline"' in target["expr"] and 'hoptrace_stage=~"$stage"' in target["expr"], panel["title"]


@pytest.mark.parametrize(("dashboard", "panel", "target"), _dashboard_targets("prometheus"))
def test_every_dashboard_panel_query_returns_data(stack: Stack, settled: Run, dashboard: str, panel: dict[str, Any], target: dict[str, Any]) -> None:
    """Asked again for up to a minute: a rate needs two scrapes of a series, and a counter born late in the run may have had one so far."""
    found: list[Any] = []

    def answered() -> bool:
        found[:] = PrometheusQuery(stack.prometheus).query(_substitute(target["expr"], _variables(settled)))
        return any(math.isfinite(sample.value) for sample in found)

    assert wait_for(answered, 60, interval=2), f"{panel['title']}: no data for {_substitute(target['expr'], _variables(settled))}"
    assert {sample.labels.get("hoptrace_stage") for sample in found} <= set(STAGES)


def _jaeger_search(stack: Stack, service: str, logfmt: str, limit: int = 100) -> list[str]:
    """The trace ids Jaeger finds for SERVICE with a span having the TAGS written as Grafana writes them (``k=v k2=v2``)."""
    tags = dict(pair.split("=", 1) for pair in logfmt.split())
    query = urlencode({"service": service, "tags": json.dumps(tags), "limit": limit, "lookback": "1h"})
    with urlopen(f"{stack.jaeger}/api/traces?{query}", timeout=10) as response:
        return sorted(trace["traceID"].zfill(32) for trace in json.load(response)["data"] or ())


@pytest.mark.parametrize(("dashboard", "panel", "target"), _dashboard_targets("jaeger"))
def test_every_jaeger_panel_search_finds_the_runs_traces(
    stack: Stack, settled: Run, dashboard: str, panel: dict[str, Any], target: dict[str, Any]
) -> None:
    assert target["queryType"] == "search"
    values = _variables(settled)
    found = _jaeger_search(stack, _substitute(target["service"], values), _substitute(target["tags"], values), target["limit"])
    assert found, f"{panel['title']}: Jaeger finds nothing"
    if "dead_lettered" in target["tags"]:
        assert found == sorted(job.trace_id for job in settled.failing)


def test_the_latency_panel_links_to_the_stages_traces_in_jaeger(stack: Stack, settled: Run) -> None:
    links = [
        link
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", ())
    ]
    assert links, "no panel links to Jaeger"
    for link in links:
        url = _substitute(link["url"], {**_variables(settled), "__field.labels.hoptrace_stage": "ship", "__from": "0", "__to": "1"})
        assert url.startswith("/explore?")
        [pane] = json.loads(url.split("panes=", 1)[1]).values()
        [query] = pane["queries"]
        assert (pane["datasource"], query["datasource"]["uid"], query["queryType"]) == ("jaeger", "jaeger", "search")
        found = _jaeger_search(stack, query["service"], query["tags"])
        assert len(found) == MESSAGES and {job.trace_id for job in settled.jobs} <= set(found)  # every message went through ship


def _label_values(stack: Stack, label: str, match: str) -> list[str]:
    """The values Prometheus has of LABEL in the series MATCH selects, as Grafana's ``label_values(MATCH, LABEL)`` lists them."""
    with urlopen(f"{stack.prometheus}/api/v1/label/{quote(label)}/values?{urlencode({'match[]': match})}", timeout=10) as response:
        return sorted(json.load(response)["data"] or ())


@pytest.mark.parametrize("variable", ["pipeline", "stage", "service"])
def test_template_variables_list_what_the_run_made(stack: Stack, settled: Run, variable: str) -> None:
    [dashboard] = [json.loads(path.read_text()) for path in DASHBOARDS if path.stem == "hoptrace-pipeline"]
    [definition] = [each for each in dashboard["templating"]["list"] if each["name"] == variable]
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition["query"])
    assert match, definition
    selector, label = _substitute(match.group(1), _variables(settled)), match.group(2)
    expected = {"pipeline": ["orders"], "stage": sorted(STAGES), "service": ["orders-worker"]}[variable]
    assert _label_values(stack, label, selector) == expected


def _exemplar_labels(stack: Stack, promql: str, start_s: float, end_s: float) -> list[dict[str, str]]:
    """The labels (``trace_id``, ``span_id``) of each exemplar Prometheus kept of the series PROMQL selects, between START_S and END_S."""
    query = urlencode({"query": promql, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}"})
    with urlopen(f"{stack.prometheus}/api/v1/query_exemplars?{query}", timeout=10) as response:
        return [item["labels"] for series in json.load(response)["data"] or () for item in series.get("exemplars") or ()]


def _exemplar_targets() -> list[Any]:
    return [param for param in _dashboard_targets("prometheus") if param.values[2].get("exemplar")]


@pytest.mark.parametrize(("dashboard", "panel", "target"), _exemplar_targets())
def test_exemplars_of_latency_panels_are_traces_in_jaeger(
    stack: Stack, settled: Run, dashboard: str, panel: dict[str, Any], target: dict[str, Any]
) -> None:
    promql = _substitute(target["expr"], _variables(settled))
    trace_ids = {labels.get("trace_id") for labels in _exemplar_labels(stack, promql, settled.started_s - 60, time.time() + 60)}
    assert trace_ids and None not in trace_ids, f"{panel['title']}: no exemplar with a trace_id"
    jaeger = JaegerQuery(stack.jaeger)
    for trace_id in trace_ids:
        assert any(span.attributes.get("hoptrace.pipeline") == "orders" for span in jaeger.trace(trace_id))


def _trace_ids(output: str) -> list[str]:
    return re.findall(r"\b[0-9a-f]{32}\b", output)


def test_traces_and_trace_read_the_real_jaeger(stack: Stack, settled: Run) -> None:
    env, jaeger = {"COLUMNS": "300"}, ("--jaeger", stack.jaeger)
    listed = _trace_ids(_hoptrace(env, "traces", "--last", "100", *jaeger).stdout)
    assert len(listed) == MESSAGES and {job.trace_id for job in settled.jobs} <= set(listed)
    failed = _trace_ids(_hoptrace(env, "traces", "--last", "100", "--errors", *jaeger).stdout)
    assert sorted(failed) == sorted(job.trace_id for job in [*settled.flaky, *settled.failing])
    at_ship = _trace_ids(_hoptrace(env, "traces", "--last", "100", "--errors", "--stage", "ship", *jaeger).stdout)
    assert sorted(at_ship) == sorted(job.trace_id for job in settled.failing)
    notified = _trace_ids(_hoptrace(env, "traces", "--last", "100", "--stage", "notify", *jaeger).stdout)
    assert len(notified) == DELIVERED

    plain = settled.plain[0]
    exported = json.loads(_hoptrace(env, "trace", plain.trace_id, "--json", *jaeger).stdout)
    spans = exported["spans"]
    assert len(spans) == 8 and {span["attributes"]["hoptrace.job.id"] for span in spans} == {plain.job_id}
    assert exported["trace_id"] == plain.trace_id
    end_to_end_s = (max(span["end_ns"] for span in spans) - min(span["start_ns"] for span in spans)) / 1e9
    assert sum(segment["duration_s"] for segment in exported["critical_path"]) == pytest.approx(end_to_end_s, abs=1e-6)
    tree = _hoptrace(env, "trace", settled.failing[0].trace_id, *jaeger).stdout
    assert "dead-lettered" in tree and all(stage in tree for stage in STAGES[:3])


def test_the_critical_path_times_add_up_to_every_finished_job_s_end_to_end_time(stack: Stack, settled: Run) -> None:
    """What the monitor counted from Jaeger into Prometheus is each orders job's end-to-end time, split by stage and cause."""
    prometheus, jaeger = PrometheusQuery(stack.prometheus), JaegerQuery(stack.jaeger)
    series = 'hoptrace_stage_critical_time_seconds_total{hoptrace_pipeline="orders"}'

    def expected() -> float:
        jobs = [
            spans
            for spans in jaeger.recent_spans(200, lookback_s=600).values()
            if any(s.attributes.get("hoptrace.pipeline") == "orders" for s in spans)
        ]
        assert len(jobs) == MESSAGES  # the one sent with a broken traceparent included: a job of its own
        return sum(max(span.end_ns for span in spans) - min(span.start_ns for span in spans) for spans in jobs) / 1e9

    def counted() -> float:
        return sum(sample.value for sample in prometheus.query(series))

    assert wait_for(lambda: math.isclose(counted(), expected(), rel_tol=1e-9), 90, interval=1), (counted(), expected())
    found = {(sample.labels["hoptrace_stage"], sample.labels["hoptrace_cause"]) for sample in prometheus.query(series)}
    assert {(stage, cause) for stage in STAGES for cause in ("publish", "handler")} <= found
    assert ("charge", "retry_backoff") in found  # the flaky jobs' pause before their second attempt at charge
    assert {stage for stage, _ in found} <= {*STAGES, "?"} and {cause for _, cause in found} <= set(get_args(Cause))


def test_the_stage_table_from_prometheus_is_exact(stack: Stack, settled: Run) -> None:
    window_s = time.time() - settled.started_s + 30
    stats = {each.stage: each for each in PrometheusStages(PrometheusQuery(stack.prometheus), "orders").stage_stats(window_s)}
    assert sorted(stats) == sorted(STAGES)
    for stage, each in stats.items():
        kafka = stage in ("validate", "ship")
        assert (each.system, each.destination) == (
            "kafka" if kafka else "celery",
            settled.namespace + dict(zip(STAGES, ("orders.placed", "payments", "orders.charged", "notifications"), strict=True))[stage],
        )
        assert (each.messages, each.consumed) == (ATTEMPTS[stage], CONSUMED[stage])
        assert (each.errors, each.retries, each.dead_lettered) == (
            FAILED_ATTEMPTS.get(stage, 0),
            RETRIES.get(stage, 0),
            FAILING if stage == "ship" else 0,
        )
        assert 0 < each.handler_p50_s <= each.handler_p95_s <= each.handler_p99_s  # type: ignore[operator]
        assert each.queue_wait_p95_s is not None and each.job_latency_p95_s is not None
        assert each.depth == 0 and (each.depth_ready, each.depth_unacked) == ((None, None) if kafka else (0, 0))
        assert each.oldest_waiting_s == 0  # nothing waits: Kafka lag in seconds, or the age of a Redis queue's head
        assert each.rate_per_s == pytest.approx(ATTEMPTS[stage] / window_s)

    table = _hoptrace({"COLUMNS": "300"}, "stages", "--prometheus", stack.prometheus, "--pipeline", "orders", "--window", str(round(window_s))).stdout
    for stage in STAGES:
        assert re.search(rf"^{stage}\s+(kafka|celery) {re.escape(settled.namespace)}\S+\s+{ATTEMPTS[stage]}\s", table, re.MULTILINE), table
    assert re.search(rf"^ship\s+{MESSAGES}\s+{FAILING}\s", table, re.MULTILINE), table


def test_watch_reads_jaeger_and_prometheus_without_a_receiver(stack: Stack, settled: Run, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "hoptrace",
        "watch",
        "--jaeger",
        stack.jaeger,
        "--prometheus",
        stack.prometheus,
        "--refresh",
        "0.5",
        "--window",
        "3600",
    ]
    with running(command, tmp_path / "watch.log", {"COLUMNS": "200"}, ready="hoptrace watch: reading Jaeger at") as watch:
        watch.wait_for_output(f"celery {settled.namespace}notifications", timeout=30)
        watch.wait_for_output(f"trace {settled.failing[-1].trace_id}", timeout=30)
        screen = watch.output()
    assert f"├── validate  kafka {settled.namespace}orders.placed" in screen
    assert "OTLP gRPC on" not in screen
