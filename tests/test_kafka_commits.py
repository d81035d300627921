"""The Kafka worker's commits on a real broker, on each client: a failed commit is sent again, never over a later one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from hoptrace.kafka_clients import stage_opener
from hoptrace.loader import load_pipeline
from hoptrace.pipeline.settings import Settings
from hoptrace.producers.publisher import PipelinePublisher
from hoptrace.workers.kafka import KafkaStageWorker
from hoptrace.workers.processing import StageProcessor
from tests.test_processing import Sender

ORDERS = "hoptrace.examples.orders:pipeline"

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


@pytest.fixture(params=["kafka-python", "confluent-kafka"])
def client(request: pytest.FixtureRequest) -> str:
    """The Kafka client the worker runs on."""
    return str(request.param)


@pytest.fixture(params=[1])
def worker(
    request: pytest.FixtureRequest, settings: Settings, client: str, namespace: str, kafka_admin: KafkaAdminClient
) -> Iterator[KafkaStageWorker]:
    """An in-process worker of the orders pipeline's ship stage on CLIENT, its partitions (1, or the fixture's param) assigned, nothing polled yet."""
    pipeline = load_pipeline(ORDERS, namespace)
    stage = pipeline["ship"]
    kafka_admin.create_topics([NewTopic(stage.transport.topic, request.param, 1)], wait_for_metadata=True)
    processor = StageProcessor(
        pipeline, stage, PipelinePublisher(pipeline, dict.fromkeys(("kafka", "celery"), Sender()), middleware=[]), middleware=[]
    )  # never runs: no record is polled
    worker = KafkaStageWorker(processor, stage_opener(settings.model_copy(update={"kafka_client": client})))
    consumer = worker._consumer
    for _ in range(40):
        if consumer.assignment():
            break
        consumer.poll(0.25)
    assert consumer.assignment(), "the ship worker was never assigned its partition"
    yield worker
    worker._consumer.close()


def _committed(settings: Settings, worker: KafkaStageWorker) -> int | None:
    (partition,) = worker._consumer.assignment()
    reader = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=worker.transport.group, enable_auto_commit=False)
    try:
        return reader.committed(TopicPartition(*partition))
    finally:
        reader.close(autocommit=False)


def test_a_failed_commit_is_sent_again_unless_a_later_commit_of_its_partition_was_sent(settings: Settings, worker: KafkaStageWorker) -> None:
    (partition,) = worker._consumer.assignment()
    worker._done[partition] = 3
    worker._commit(wait=True)
    first = worker._sent[partition]
    worker._done[partition] = 7
    worker._commit(wait=True)
    assert _committed(settings, worker) == 7

    # The answer to the first commit says it failed (a timeout, a rebalance): sending it now would take the group back to 3.
    worker._answered({partition: first}, KafkaError("the first commit failed"))
    assert worker._done == {}
    worker._commit(wait=True)
    assert _committed(settings, worker) == 7

    # The latest commit failing is sent again: the group must not stay short of what was processed.
    latest = worker._sent[partition]
    worker._answered({partition: latest}, KafkaError("the latest commit failed"))
    assert worker._done == {partition: 7}

    # Unless processing went further meanwhile: then the newer offset goes.
    worker._done[partition] = 9
    worker._answered({partition: latest}, KafkaError("the latest commit failed"))
    worker._commit(wait=True)
    assert _committed(settings, worker) == 9


@pytest.mark.parametrize(("worker", "client"), [(2, "kafka-python")], indirect=True)
def test_a_failure_answered_while_another_commit_is_sent_is_sent_again(worker: KafkaStageWorker) -> None:
    # kafka-python hands out the answers it holds at the start of the next commit_async: a failed commit of one
    # partition is answered while a commit of another partition is being sent, and must survive that send.
    first, second = sorted(worker._consumer.assignment())
    worker._done[first] = 4
    worker._commit(wait=True)
    failed = worker._sent[first]
    worker._consumer.client._coordinator.completed_offset_commits.appendleft((worker._answered, {first: failed}, KafkaError("max in flight")))
    worker._done[second] = 6
    worker._commit()
    assert worker._done == {first: 4}, "the failed commit of the first partition was forgotten"


def test_an_idle_worker_commits_a_position_whose_commit_was_lost(settings: Settings, worker: KafkaStageWorker) -> None:
    # A failed commit that could not be sent again (answered while a rebalance had the partition away) left the group behind
    # until the partition's next record; idle, the worker now commits what it processed.
    (partition,) = worker._consumer.assignment()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    for _ in range(7):
        producer.send(partition.topic, b"{}", partition=partition.partition)
    producer.close()
    polled = 0
    for _ in range(40):  # processed up to 7 (the position); its commit was lost
        polled += sum(len(records) for _, records in worker._consumer.poll(0.25))
        if polled == 7:
            break
    assert polled == 7
    worker._done[partition] = 5
    worker._commit(wait=True)
    worker._answered({partition: worker._sent[partition]}, None)  # the broker confirmed 5
    worker._heal()
    worker._consumer.poll(0.5)  # the commit's answer
    assert _committed(settings, worker) == 7
    worker._heal()
    assert worker._done == {}, "nothing more to send once the broker confirmed the position"
