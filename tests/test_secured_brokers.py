"""hoptrace on secured brokers: every client of it authenticates and checks certificates; bad credentials or an untrusted certificate say so.

The local services have secured twins (``deploy/local``): the Kafka broker a SASL_PLAINTEXT listener
(mechanism PLAIN) on the port after its controller's and a SASL_SSL listener (SCRAM-SHA-512, a
certificate of the local CA in ``<state>/tls``) on the one after that; Redis a second instance on the
next port with TLS only and an ACL (the default user off, user ``hoptrace``). The orders pipeline runs
through them end to end under ``hoptrace worker``, with its monitor reading consumer lag and queue depth
through them too. Every Kafka test runs on both clients hoptrace's own stages and publisher can use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kafka.admin import KafkaAdminClient, NewTopic

from hoptrace.pipeline.settings import Settings
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import KAFKA_CLIENTS, run_hoptrace
from tests.memory_store import TelemetryStore
from tests.secured import SASL_PASSWORD, SASL_USER, mutual_tls_env, secured_env
from tests.traces import chain, latest_totals, orders_chain_names, outbox, published_jobs, wait_for, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


def _sasl_env(hoptrace_env: dict[str, str], settings: Settings, password: str = SASL_PASSWORD) -> dict[str, str]:
    host, port = settings.kafka_servers[0].rsplit(":", 1)
    return {
        **hoptrace_env,
        "HOPTRACE_KAFKA_BOOTSTRAP": f"{host}:{int(port) + 2}",
        "HOPTRACE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HOPTRACE_KAFKA_SASL_MECHANISM": "PLAIN",
        "HOPTRACE_KAFKA_SASL_USERNAME": SASL_USER,
        "HOPTRACE_KAFKA_SASL_PASSWORD": password,
    }


def _hoptrace(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run one ``hoptrace`` command to the end, however it ends."""
    command = [sys.executable, "-m", "hoptrace", *args]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False)


def _refused_publish(env: dict[str, str], stage: str = "validate") -> str:
    """What ``hoptrace publish`` to STAGE said, having failed (exit 1) without a traceback."""
    done = _hoptrace(env, "publish", ORDERS, stage, "--payload", json.dumps({"order_id": "x"}))
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said, said
    return said


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_the_orders_pipeline_runs_end_to_end_through_a_sasl_listener(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    env = _sasl_env(hoptrace_env, settings)
    with hoptrace_worker(ORDERS, env=env):  # with its monitor: the consumer lag is read through the SASL listener as well
        published = published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--count", "5").stdout)
        assert len(wait_for_outbox(settings, namespace, 5)) == 5
        assert wait_for(lambda: len(store.spans()) >= 40, timeout=30)
        assert wait_for(lambda: store.metrics("hoptrace.kafka.consumer.lag") != [], timeout=30)
    traces = store.traces()
    assert set(traces) == {job.trace_id for job in published}
    assert all([(span.name, span.kind) for span in chain(spans)] == orders_chain_names(namespace) for spans in traces.values())
    lags = store.metrics("hoptrace.kafka.consumer.lag")
    assert latest_totals(lags, {"messaging.consumer.group.name": f"{namespace}ship"}) == 0


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_the_orders_pipeline_runs_end_to_end_over_tls_with_scram_kafka_and_acl_redis(  # noqa: PLR0913 - the fixtures it runs on
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
    kafka_admin: KafkaAdminClient,
) -> None:
    _, store = telemetry_store
    env = {**hoptrace_env, **secured_env(settings)}
    # The topics exist before the workers join: what this test proves is TLS, SCRAM and ACLs end to end. A stage worker that
    # joined before its topic existed once kept no partitions for the whole 90 s wait here, in a CI run under load (kafka-python
    # 3.0.12 over SASL_SSL; not reproduced alone). The plain end-to-end tests still start their workers before the topics exist.
    kafka_admin.create_topics([NewTopic(f"{namespace}{topic}", 1, 1) for topic in ("orders.placed", "orders.charged")], wait_for_metadata=True)
    tls_settings = Settings(redis_url=env["HOPTRACE_REDIS_URL"], namespace=namespace)
    with hoptrace_worker(ORDERS, env=env):  # Celery's broker, the job ledger, the depth and lag gauges: all through TLS
        published = published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--count", "5").stdout)
        assert len(wait_for_outbox(tls_settings, namespace, 5)) == 5
        assert wait_for(lambda: len(store.spans()) >= 40, timeout=30)
        gauges = ("hoptrace.kafka.consumer.lag", "hoptrace.kafka.consumer.lag_seconds", "hoptrace.queue.depth")
        assert wait_for(lambda: all(store.metrics(name) != [] for name in gauges), timeout=30)
        for probe in (("--stage", "validate"), ("--stage", "charge"), ("--monitor",)):  # the probes read what the workers wrote
            run_hoptrace(env, "probe", "ready", *probe)
    traces = store.traces()
    assert set(traces) == {job.trace_id for job in published}
    assert all([(span.name, span.kind) for span in chain(spans)] == orders_chain_names(namespace) for spans in traces.values())
    assert latest_totals(store.metrics("hoptrace.kafka.consumer.lag"), {"messaging.consumer.group.name": f"{namespace}ship"}) == 0
    assert latest_totals(store.metrics("hoptrace.queue.depth"), {"messaging.destination.name": f"{namespace}notify"}) == 0
    assert outbox(settings, namespace) == []  # the plain Redis saw none of it


def test_over_tls_a_redis_list_item_that_is_no_message_is_dead_lettered_and_the_worker_goes_on(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable
) -> None:
    """hoptrace's one-step fetch reads the queues over ``rediss://`` too: kombu's own channel raised on such an item and dropped it."""
    env = {**hoptrace_env, **secured_env(settings)}
    tls_settings = Settings(redis_url=env["HOPTRACE_REDIS_URL"], namespace=namespace)
    client = redis.Redis.from_url(tls_settings.redis_url)
    queue, junk = f"{namespace}payments", [b"", b"not json", b"[1, 2]", b'{"no": "envelope"}']
    with hoptrace_worker(ORDERS, "--stage", "charge", "--stage", "ship", "--stage", "notify", env=env) as worker:
        for item in junk:
            client.lpush(queue, item)
        run_hoptrace(env, "publish", ORDERS, "charge", "--payload", json.dumps({"order_id": "after-the-junk"}))
        assert wait_for(lambda: len(outbox(tls_settings, namespace)) == 1, 60), worker.output()
        assert wait_for(lambda: client.llen(f"{queue}.dead-letter") == len(junk), 60), worker.output()
        assert client.llen(queue) == 0 and worker.popen.poll() is None, worker.output()
    assert "Traceback" not in worker.output()


def _stranger(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key: a CA that signed neither the brokers' certificates nor the clients'."""
    certificate, key = folder / "stranger.pem", folder / "stranger.key"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=stranger", "-keyout", str(key), "-out", str(certificate)]
    subprocess.run(openssl, check=True, capture_output=True)
    return certificate, key


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_an_untrusted_certificate_is_a_clear_error_not_a_traceback(settings: Settings, hoptrace_env: dict[str, str], tmp_path: Path) -> None:
    stranger, _ = _stranger(tmp_path)
    env = {**hoptrace_env, **secured_env(settings, stranger), "HOPTRACE_KAFKA_CONNECT_TIMEOUT_S": "5"}
    said = _refused_publish(env)  # validate: a Kafka topic
    assert "could not connect to Kafka at" in said and "HOPTRACE_KAFKA_SSL_CAFILE" in said, said
    redis_only = {**env, "HOPTRACE_KAFKA_SSL_CAFILE": secured_env(settings)["HOPTRACE_KAFKA_SSL_CAFILE"]}  # Kafka trusted: the publisher opens it too
    said = _refused_publish(redis_only, "charge")  # a Celery queue on the TLS Redis
    assert "could not send to Redis at rediss://hoptrace:**@" in said and "CERTIFICATE_VERIFY_FAILED" in said and "ssl_ca_certs=" in said, said
    assert SASL_PASSWORD not in said


def test_a_client_certificate_the_redis_does_not_trust_is_refused_with_what_to_check(
    settings: Settings, hoptrace_env: dict[str, str], tmp_path: Path
) -> None:
    """The TLS Redis checks the certificate a client gives (``--tls-auth-clients optional``): hoptrace's clients give the one in the URL."""
    env = {**hoptrace_env, **secured_env(settings)}
    assert len(published_jobs(run_hoptrace(env, "publish", ORDERS, "charge", "--count", "1").stdout)) == 1  # the local CA's client certificate
    said = _refused_publish({**hoptrace_env, **secured_env(settings, client=_stranger(tmp_path))}, "charge")
    assert "could not send to Redis at" in said and "ssl_certfile=" in said, said


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_a_wrong_password_is_a_clear_error_not_a_traceback(settings: Settings, hoptrace_env: dict[str, str]) -> None:
    said = _refused_publish({**_sasl_env(hoptrace_env, settings, password="not-the-password"), "HOPTRACE_KAFKA_CONNECT_TIMEOUT_S": "5"})
    assert "could not connect to Kafka at" in said and "HOPTRACE_KAFKA_SASL_" in said, said


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_a_stage_worker_kafka_refuses_says_so_and_exits(settings: Settings, hoptrace_env: dict[str, str]) -> None:
    # Its consumer, or the producer it forwards with, cannot authenticate: the same clear error as publish, no traceback.
    env = {**_sasl_env(hoptrace_env, settings, password="not-the-password"), "HOPTRACE_KAFKA_CONNECT_TIMEOUT_S": "5"}
    done = _hoptrace(env, "worker", ORDERS, "--stage", "validate", "--no-monitor", "--exit-on-child-failure")
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said, said
    assert "could not connect to Kafka at" in said.replace("\n", " ") and "HOPTRACE_KAFKA_SASL_" in said, said


def test_sasl_settings_that_do_not_go_together_are_refused_with_what_to_set(settings: Settings, hoptrace_env: dict[str, str]) -> None:
    env = {**hoptrace_env, "HOPTRACE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}  # no mechanism, user or password
    done = _hoptrace(env, "publish", ORDERS, "validate")
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "Traceback" not in said
    assert "HOPTRACE_KAFKA_SASL_USERNAME" in said, said


def test_secrets_may_come_from_a_mounted_folder_and_the_environment_wins(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], tmp_path: Path
) -> None:
    """As a Kubernetes Secret mounted as files: one file per setting, named after it."""
    env = {**hoptrace_env, **secured_env(settings), "HOPTRACE_SECRETS_DIR": str(tmp_path)}
    (tmp_path / "HOPTRACE_KAFKA_SASL_PASSWORD").write_text(env.pop("HOPTRACE_KAFKA_SASL_PASSWORD"))
    (tmp_path / "HOPTRACE_REDIS_URL").write_text(env.pop("HOPTRACE_REDIS_URL"))
    published = published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--count", "2").stdout)  # Kafka over SASL_SSL
    assert len(published) == 2
    assert len(published_jobs(run_hoptrace(env, "publish", ORDERS, "charge", "--count", "1").stdout)) == 1  # the TLS Redis
    said = _refused_publish({**env, "HOPTRACE_KAFKA_SASL_PASSWORD": "not-the-password", "HOPTRACE_KAFKA_CONNECT_TIMEOUT_S": "5"})
    assert "could not connect to Kafka at" in said, said  # the environment's value was the one used


def test_a_secrets_folder_that_is_not_there_is_a_clear_error(hoptrace_env: dict[str, str], tmp_path: Path) -> None:
    done = _hoptrace({**hoptrace_env, "HOPTRACE_SECRETS_DIR": str(tmp_path / "nope")}, "publish", ORDERS, "validate")
    said = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in said, said
    assert f"HOPTRACE_SECRETS_DIR={tmp_path / 'nope'} is not a folder" in said.replace("\n", ""), said  # (wrapped to the terminal)


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_a_kafka_that_wants_a_client_certificate_gets_it(settings: Settings, namespace: str, hoptrace_env: dict[str, str]) -> None:
    env = {**hoptrace_env, **mutual_tls_env(settings)}
    assert len(published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--count", "2").stdout)) == 2
    without = {name: value for name, value in env.items() if not name.startswith(("HOPTRACE_KAFKA_SSL_CERTFILE", "HOPTRACE_KAFKA_SSL_KEYFILE"))}
    said = _refused_publish({**without, "HOPTRACE_KAFKA_CONNECT_TIMEOUT_S": "5"})
    assert "could not connect to Kafka at" in said, said


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_oauthbearer_takes_its_token_from_the_users_function(settings: Settings, namespace: str, hoptrace_env: dict[str, str]) -> None:
    env = {name: value for name, value in {**hoptrace_env, **secured_env(settings)}.items() if not name.startswith("HOPTRACE_KAFKA_SASL_")}
    env = {**env, "HOPTRACE_KAFKA_SASL_MECHANISM": "OAUTHBEARER", "HOPTRACE_KAFKA_SASL_OAUTH_TOKEN": "tests.secured:unsigned_token"}
    assert len(published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--count", "2").stdout)) == 2
    said = _refused_publish({**env, "HOPTRACE_KAFKA_SASL_OAUTH_TOKEN": "tests.secured:expired_token", "HOPTRACE_KAFKA_CONNECT_TIMEOUT_S": "5"})
    assert "could not connect to Kafka at" in said, said
    done = _hoptrace({**env, "HOPTRACE_KAFKA_SASL_OAUTH_TOKEN": "tests.secured:no_such_function"}, "publish", ORDERS, "validate")
    said = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in said and "names no function" in " ".join(said.split()), said
