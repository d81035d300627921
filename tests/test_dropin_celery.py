"""hoptrace drop-in for a plain Celery app (tests/apps/plain_celery.py: no hoptrace import), under ``opentelemetry-instrument``.

A real prefork worker and a real client process both run under ``opentelemetry-instrument``
with hoptrace installed and opentelemetry-distro not installed (hoptrace's distro and
configurator set the SDK up); they export over OTLP/gRPC into the test's receiver. Exact span
structure per case: a canvas (chain of 3, chord of 5 + body, a plain task) is three jobs, three
traces; retries are one process span per attempt in the job's trace; ``send_task`` by name
ends its span and leaks no context; beat's ticks are one job each. The stock Celery
instrumentation is installed too (a hoptrace dependency): active or disabled, the result is
the same, because it steps aside.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from importlib.util import find_spec
from pathlib import Path

import pytest
import redis
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from hoptrace.pipeline.settings import Settings
from hoptrace.view.critical_path import critical_path, dominant
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import OtlpReceiver
from tests.memory_store import TelemetryStore
from tests.processes import Process, running, without_telemetry_settings
from tests.secured import secured_env
from tests.traces import chain, latest_totals, tiles, wait_for

BIN = Path(sys.executable).parent
INSTRUMENT = str(BIN / "opentelemetry-instrument")
CELERY = str(BIN / "celery")
REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(find_spec("opentelemetry.distro") is not None, reason="these cases are for hoptrace without opentelemetry-distro")


@pytest.fixture
def plain_env(settings: Settings, redis_prefix: str, unique: str, telemetry_store: tuple[OtlpReceiver, TelemetryStore]) -> dict[str, str]:
    """The plain app's environment: its Redis prefix and queue, OTLP to the test receiver, fast exports; nothing of hoptrace's."""
    receiver, _ = telemetry_store
    return {
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "TEST_REDIS_PREFIX": redis_prefix,
        "TEST_QUEUE": f"plain-{unique}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "PYTHONPATH": str(REPOSITORY),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def plain_worker(plain_env: dict[str, str], tmp_path: Path) -> Callable[..., AbstractContextManager[Process]]:
    """``opentelemetry-instrument celery -A tests.apps.plain_celery worker`` (prefork, 2 processes) for the test's queue."""

    def start(**env: str) -> AbstractContextManager[Process]:
        command = [INSTRUMENT, CELERY, "-A", "tests.apps.plain_celery", "worker", "--pool", "prefork", "--concurrency", "2"]
        command += ["-Q", plain_env["TEST_QUEUE"], "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
        return running(command, tmp_path / "worker.log", {**plain_env, "OTEL_SERVICE_NAME": "plain-worker", **env}, ready=" ready.")

    return start


def run_client(plain_env: dict[str, str], case: str, **env: str) -> list[str]:
    """Run the client CASE under opentelemetry-instrument to the end; its output lines."""
    done = subprocess.run(
        [INSTRUMENT, sys.executable, "-m", "tests.apps.plain_celery_client", case],
        env={**without_telemetry_settings(), **plain_env, "OTEL_SERVICE_NAME": "plain-client", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "leaked False" in done.stdout
    return done.stdout.splitlines()


def hoptrace_spans(store: TelemetryStore) -> dict[str, list[ReceivedSpan]]:
    """Per trace: hoptrace's spans (publish, process, canvas roots), by start; the stock Redis instrumentation's are left out."""
    traces: dict[str, list[ReceivedSpan]] = {}
    for span in sorted(store.spans(), key=lambda span: span.start_ns):
        if "hoptrace.stage" in span.attributes or span.name.startswith("start "):
            traces.setdefault(span.trace_id, []).append(span)
    return traces


def pathway_counts(store: TelemetryStore) -> dict[tuple[str, str], float]:
    """``hoptrace.pathway.latency``'s count per (stage, pathway), over the worker's processes; every series in pipeline ``plainapp``."""
    points = store.metrics("hoptrace.pathway.latency")
    assert {(point.unit, point.attributes["hoptrace.pipeline"]) for point in points} <= {("s", "plainapp")}
    series = {(point.attributes["hoptrace.stage"], point.attributes["hoptrace.pathway"]) for point in points}
    return {(stage, pathway): latest_totals(points, {"hoptrace.stage": stage, "hoptrace.pathway": pathway}, "count") for stage, pathway in series}


def processes(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [span for span in spans if span.kind == "CONSUMER"]


@pytest.fixture
def stock(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The stock Celery instrumentor active (it steps aside) or disabled (as if not installed)."""
    yield {} if request.param == "active" else {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "celery"}


@pytest.mark.parametrize("stock", ["active", "disabled"], indirect=True)
def test_a_chain_a_chord_and_a_task_are_three_jobs_three_traces(
    stock: dict[str, str], plain_env: dict[str, str], plain_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    with plain_worker(**stock) as worker:
        output = run_client(plain_env, "canvas", **stock)
        assert [line for line in output if line.startswith("result")] == ["result 13", "result 20", "result 4"]
        assert wait_for(lambda: sum(len(processes(spans)) for spans in hoptrace_spans(store).values()) >= 10, 30)
        assert wait_for(lambda: store.metrics("hoptrace.queue.depth") != [], 30)
    assert worker.popen.returncode == 0

    traces = hoptrace_spans(store)
    assert sorted(len(processes(spans)) for spans in traces.values()) == [1, 3, 6]
    by_count = {len(processes(spans)): spans for spans in traces.values()}
    assert not any(span.name.startswith(("run/", "apply_async/")) for span in store.spans())  # the stock spans: none

    plain = by_count[1]
    assert [(span.name, span.kind, span.attributes["hoptrace.stage"]) for span in chain(plain)] == [
        (f"send {plain_env['TEST_QUEUE']}", "PRODUCER", "plain.add"),
        (f"process {plain_env['TEST_QUEUE']}", "CONSUMER", "plain.add"),
    ]
    links = chain(by_count[3])  # parent-child along the chain
    assert [(span.kind, span.attributes["hoptrace.stage"]) for span in links] == [
        ("PRODUCER", "plain.add"), ("CONSUMER", "plain.add"), ("PRODUCER", "plain.mul"),
        ("CONSUMER", "plain.mul"), ("PRODUCER", "plain.add"), ("CONSUMER", "plain.add"),
    ]  # fmt: skip
    assert processes(links)[0].attributes["messaging.message.id"] != processes(links)[1].attributes["messaging.message.id"]

    chord = by_count[6]
    [root] = [span for span in chord if span.parent_span_id is None]
    by_id = {span.span_id: span for span in chord}
    headers = [span for span in processes(chord) if span.attributes["hoptrace.stage"] == "plain.add"]
    [body] = [span for span in processes(chord) if span.attributes["hoptrace.stage"] == "plain.xsum"]
    assert (root.name, root.kind, len(headers)) == ("start chord", "INTERNAL", 5)
    assert all(by_id[by_id[header.parent_span_id].parent_span_id] is root for header in headers)  # header process <- send <- root
    body_send = by_id[body.parent_span_id]
    assert (body_send.kind, by_id[body_send.parent_span_id] in headers) == ("PRODUCER", True)  # sent by the last header to finish
    assert {link_span for _, link_span, _ in body.links} == {header.span_id for header in headers}  # linked to every header it waited for
    assert len({span.trace_id for span in chord}) == 1

    jobs = {trace_id: {span.attributes.get("hoptrace.job.id") for span in spans} for trace_id, spans in traces.items()}
    assert all(len(ids) == 1 and None not in ids for ids in jobs.values()) and len(set.union(*jobs.values())) == 3
    assert latest_totals(store.metrics("messaging.process.duration"), {}, "count") == 10
    assert latest_totals(store.metrics("messaging.client.consumed.messages"), {}) == 10
    assert pathway_counts(store) == {
        ("plain.add", "plain.add"): 7,  # the chain's first link, the chord's 5 members, the plain task: published by the client
        ("plain.mul", "plain.add>plain.mul"): 1,
        ("plain.add", "plain.add>plain.mul>plain.add"): 1,
        ("plain.xsum", "plain.add>plain.xsum"): 1,  # the chord's body, sent by the last member to finish
    }
    queues = {point.attributes.get("messaging.destination.name") for point in store.metrics("hoptrace.queue.depth")}
    assert plain_env["TEST_QUEUE"] in queues
    reporters = {point.resource.get("process.pid") for point in store.metrics("hoptrace.queue.depth")}
    assert reporters == {worker.popen.pid}  # once per worker host: the main process, not every pool process


@pytest.mark.parametrize(("env", "frozen"), [({}, True), ({"HOPTRACE_GC_FREEZE": "false"}, False)])
def test_the_pool_processes_inherit_the_heap_frozen_at_start_up(
    plain_env: dict[str, str], plain_worker: Callable, env: dict[str, str], frozen: bool
) -> None:
    with plain_worker(**env):
        output = run_client(plain_env, "heap")
    [count] = [int(line.split()[1]) for line in output if line.startswith("result")]
    assert (count > 10_000) is frozen, count  # frozen by the worker's main process before it forked: pool processes never freeze


@pytest.mark.parametrize("case", ["retry", "autoretry"])
def test_a_retried_task_is_one_process_span_per_attempt_in_one_trace(
    case: str, plain_env: dict[str, str], plain_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    with plain_worker():
        run_client(plain_env, case)
        assert wait_for(lambda: sum(len(processes(spans)) for spans in hoptrace_spans(store).values()) >= 2, 30)

    [spans] = hoptrace_spans(store).values()
    stage = "plain.flaky" if case == "retry" else "plain.auto"
    assert [
        (span.kind, span.attributes.get("hoptrace.attempt"), span.attributes.get("hoptrace.outcome"), span.status_code) for span in chain(spans)
    ] == [
        ("PRODUCER", None, None, "UNSET"),
        ("CONSUMER", 1, "retried", "ERROR"),
        ("PRODUCER", None, None, "UNSET"),  # the retry, published from inside the failing attempt
        ("CONSUMER", 2, "processed", "UNSET"),
    ]
    assert {span.attributes["hoptrace.stage"] for span in spans} == {stage}
    assert latest_totals(store.metrics("hoptrace.stage.retries"), {"hoptrace.stage": stage}) == 1
    assert pathway_counts(store) == {(stage, stage): 1}  # the retry is no second stage; the retried attempt reports no outcome
    waits = latest_totals(store.metrics("hoptrace.queue.wait"), {"hoptrace.stage": stage}, "sum")
    if case == "retry":
        assert waits < 1.5  # the two-second countdown is not time in the queue


@pytest.mark.parametrize("broker", ["plain", "tls"])
def test_send_task_by_name_ends_its_span_and_continues_the_trace(
    broker: str, settings: Settings, plain_env: dict[str, str], plain_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    """tls: the app's broker and result backend (and hoptrace's keep channel) are the local Redis over TLS, as an ACL user."""
    _, store = telemetry_store
    secured = {"HOPTRACE_REDIS_URL": secured_env(settings)["HOPTRACE_REDIS_URL"]} if broker == "tls" else {}
    with plain_worker(**secured):
        assert "result 42" in run_client(plain_env, "by-name", **secured)
        assert wait_for(lambda: any(processes(spans) for spans in hoptrace_spans(store).values()), 30)

    [spans] = hoptrace_spans(store).values()
    send, process = chain(spans)
    assert (send.kind, send.resource["service.name"], process.resource["service.name"]) == ("PRODUCER", "plain-client", "plain-worker")
    if secured:  # the task's result is in the TLS Redis, and nothing of it in the plain one
        prefix = f"{plain_env['TEST_REDIS_PREFIX']}*"
        assert redis.Redis.from_url(secured["HOPTRACE_REDIS_URL"]).keys(prefix) and not redis.Redis.from_url(settings.redis_url).keys(prefix)
    assert send.attributes["messaging.message.id"] == process.attributes["messaging.message.id"]


def test_each_beat_tick_starts_its_own_job(
    plain_env: dict[str, str], plain_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore], tmp_path: Path
) -> None:
    _, store = telemetry_store
    beat_env = {**plain_env, "TEST_BEAT": "1", "OTEL_SERVICE_NAME": "plain-beat"}
    beat = [INSTRUMENT, CELERY, "-A", "tests.apps.plain_celery", "beat", "-s", str(tmp_path / "schedule"), "--loglevel", "INFO"]
    with plain_worker(), running(beat, tmp_path / "beat.log", beat_env, ready="beat: Starting"):
        assert wait_for(lambda: sum(len(processes(spans)) for spans in hoptrace_spans(store).values()) >= 3, 30)

    traces = hoptrace_spans(store)
    ticks = [spans for spans in traces.values() if processes(spans)]
    assert len(ticks) >= 3
    for spans in ticks:
        send, process = chain(spans)
        assert (send.resource["service.name"], process.attributes["hoptrace.stage"]) == ("plain-beat", "plain.add")
    assert len({spans[0].attributes["hoptrace.job.id"] for spans in ticks}) == len(ticks)
    assert Counter(span.kind for spans in traces.values() for span in spans)["PRODUCER"] >= len(ticks)


def test_uninstrument_disconnects_every_signal_and_unwraps_every_method_and_instrument_twice_is_a_no_op() -> None:
    from celery import Celery, signals
    from celery.canvas import _chord, group
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    from hoptrace.clients.celery.instrumentor import HoptraceCeleryInstrumentor

    watched = [getattr(signals, name) for name in dir(signals) if isinstance(getattr(signals, name), signals.Signal)]
    patched = [(Celery, "send_task"), (group, "apply_async"), (_chord, "apply_async")]

    def receivers() -> list[int]:
        return [len(signal.receivers or []) for signal in watched]

    before, originals = receivers(), {key: key[0].__dict__[key[1]] for key in patched}
    stock_methods = (CeleryInstrumentor._instrument, CeleryInstrumentor._uninstrument)  # noqa: SLF001
    ours = HoptraceCeleryInstrumentor()
    ours.instrument()
    connected = receivers()
    assert sum(connected) - sum(before) == 9  # publish x2, prerun, postrun, retry, failure, pool exit, worker ready and shutdown
    assert all(owner.__dict__[name].__wrapped__ is originals[(owner, name)] for owner, name in patched)
    assert (CeleryInstrumentor._instrument, CeleryInstrumentor._uninstrument) != stock_methods  # noqa: SLF001 - silenced
    ours.instrument()
    assert receivers() == connected
    ours.uninstrument()
    assert receivers() == before
    assert all(owner.__dict__[name] is originals[(owner, name)] for owner, name in patched)
    assert (CeleryInstrumentor._instrument, CeleryInstrumentor._uninstrument) == stock_methods  # noqa: SLF001
    ours.uninstrument()
    assert receivers() == before


def test_at_one_percent_a_chain_whose_last_task_raises_arrives_whole_and_the_rest_at_the_head_sampled_rate(
    plain_env: dict[str, str], plain_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    sampling = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
    with plain_worker(**sampling):
        output = run_client(plain_env, "failing-chains", TEST_LINGER_S="3", **sampling)
        assert [line for line in output if line.startswith("result")][:3] == ["result RuntimeError"] * 3
        assert wait_for(lambda: sum(span.status_code == "ERROR" for span in store.spans()) >= 3, 30)

    traces = hoptrace_spans(store)
    bound = TraceIdRatioBased.get_bound_for_rate(0.01)

    def head_sampled(trace_id: str) -> bool:
        return int(trace_id, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < bound

    failed = {trace_id: spans for trace_id, spans in traces.items() if any(span.status_code == "ERROR" for span in spans)}
    assert len(failed) == 3
    for trace_id, spans in failed.items():  # the client's publish, and each task's process span and send, from both pool processes
        assert [(span.kind, span.attributes["hoptrace.stage"]) for span in chain(spans)] == [
            ("PRODUCER", "plain.add"), ("CONSUMER", "plain.add"), ("PRODUCER", "plain.mul"),
            ("CONSUMER", "plain.mul"), ("PRODUCER", "plain.boom"), ("CONSUMER", "plain.boom"),
        ]  # fmt: skip
        assert {span.attributes.get("hoptrace.keep.reason") for span in spans} == ({None} if head_sampled(trace_id) else {"failed"})
    assert all(head_sampled(trace_id) for trace_id in set(traces) - set(failed))  # the others: head-sampled ones, nothing else
    kept = sum(not head_sampled(trace_id) for trace_id in failed)
    assert latest_totals(store.metrics("hoptrace.recorder.kept"), {"hoptrace.keep.reason": "failed"}) == kept


@pytest.mark.parametrize(
    ("case", "stage", "cause", "seconds"),
    [
        ("countdown", "plain.add", "eta_hold", 1.5),  # apply_async(countdown=1.5)
        ("retry", "plain.flaky", "retry_backoff", 2.0),  # self.retry(countdown=2)
        ("slow-chord", "plain.nap", "handler", 1.5),  # the chord's body waits for its slowest member
    ],
)
def test_a_celery_canvas_job_is_dominated_by_what_held_it(
    plain_env: dict[str, str],
    plain_worker: Callable[..., AbstractContextManager[Process]],
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
    case: str,
    stage: str,
    cause: str,
    seconds: float,
) -> None:
    _, store = telemetry_store
    with plain_worker():
        run_client(plain_env, case)
        expected = 7 if case == "slow-chord" else 2 if case == "countdown" else 3  # chord: root, 5 members, body
        assert store.wait_until(lambda s: any(len(p) >= expected - 1 for p in map(processes, hoptrace_spans(s).values())), timeout=30)
    (spans,) = hoptrace_spans(store).values()
    path = critical_path(spans)
    tiles(spans, path)
    longest = dominant(path)
    assert longest is not None and (longest.stage, longest.cause) == (stage, cause), path
    assert seconds - 0.1 <= longest.duration_s < seconds + 1.0, longest  # a countdown runs from the call, a hold from the publish's end
    if case == "slow-chord":
        assert [segment.stage for segment in path[-3:]] == ["plain.xsum"] * 3  # the body's publish, wait and handler end it
