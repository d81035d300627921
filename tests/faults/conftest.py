"""Fixtures of the fault suite: its own brokers, one scenario per test, and the fault table at the end.

The suite runs only when named (``python -m pytest tests/faults``): a plain ``pytest`` skips it.
It never uses the shared brokers of the other tests: it starts its own Redis and Kafka through
deploy/local's scripts on other ports, with its own state folder, and stops them at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hoptrace.pipeline.settings import Settings
from tests.faults.brokers import Brokers
from tests.faults.harness import Scenario
from tests.faults.table import ROWS, Row

HERE = Path(__file__).resolve().parent
COMMAND = "python -m pytest tests/faults -q"


def _named(config: pytest.Config) -> bool:
    """Whether the command line named the fault suite (or something in it) explicitly."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False
    return any(Path(arg.split("::")[0]).resolve().is_relative_to(HERE) for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the fault suite unless it was asked for by path: it takes about 15 minutes."""
    if _named(config):
        return
    skip = pytest.mark.skip(reason=f"the fault suite runs on its own: {COMMAND}")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault table (markdown) and keep a copy in the suite's state folder."""
    if not ROWS:
        return
    table = "\n".join([Row.HEADER, *(row.markdown() for row in ROWS)]) + "\n"
    path = Settings().state_dir / "faults" / "table.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"Produced by `{COMMAND}`.\n\n{table}")
    terminalreporter.write_sep("=", "fault table")
    terminalreporter.write(table)
    terminalreporter.write_line(f"(also in {path})")


@pytest.fixture(scope="session")
def brokers() -> Iterator[Brokers]:
    """The suite's own Redis and Kafka, running; stopped after the last scenario."""
    suite = Brokers(Settings().state_dir / "faults")
    for service in ("redis", "kafka"):
        suite.start(service)
    yield suite
    for service in ("kafka", "redis"):
        if suite.pid(service) is not None:
            suite.stop(service)


@pytest.fixture
def scenario(brokers: Brokers, tmp_path: Path) -> Callable[..., Scenario]:
    """Make this test's scenario: ``with scenario("kill -9 the Celery main process") as run:`` (``secured=True``: over the secured twins).

    ``kafka_client="confluent-kafka"``: hoptrace's Kafka stages and publisher run on confluent-kafka.
    """

    def make(fault: str, spec: str | None = None, secured: bool = False, kafka_client: str = "kafka-python") -> Scenario:
        return Scenario(brokers, tmp_path, fault, secured=secured, kafka_client=kafka_client, **({"spec": spec} if spec else {}))

    return make
