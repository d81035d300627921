"""Observable gauges that never block metric collection: background threads read the brokers, callbacks hand out the last values.

Asking a broker can take seconds when it is slow or gone, so the gauge callbacks never do.
Each source (one broker, read in one go) gets a thread that reads it every interval; the
callbacks of its gauges return the values of its last successful read. While a source does
not answer, its gauges keep reporting the last known values, and one warning per outage
says so. Usable on its own, for any sources on any meter provider::

    queues = RedisQueueDepth(redis_url, {"celery": {"messaging.destination.name": "celery"}})
    refresher = GaugeRefresher({"redis": queues}, meter_provider=provider)
    refresher.start()
    ...
    refresher.stop()
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from opentelemetry import metrics
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

logger = logging.getLogger(__name__)

Reading = Mapping[str, Sequence[Observation]]
"""One read of a source: the observations of each of its gauges, by gauge name."""


class GaugeSpec(NamedTuple):
    """An observable gauge: its name, UCUM unit and description."""

    name: str
    unit: str
    description: str


class GaugeSource(Protocol):
    """Where the values of some gauges come from: one broker, read in one go."""

    @property
    def gauges(self) -> Sequence[GaugeSpec]:
        """The gauges every reading has values for."""

    def read(self) -> Reading:
        """Ask the broker for the current values; blocks at most the source's own timeouts, raises when it gets no answer."""

    def close(self) -> None:
        """Release the broker connections (a later read opens new ones)."""


class _LastKnown:
    """The last reading of a source: refreshed by one caller at a time, read by gauge callbacks without waiting."""

    def __init__(self, name: str, source: GaugeSource) -> None:
        """Keep the readings of SOURCE, called NAME in log messages."""
        self.name = name
        self.source = source
        self._reading: dict[str, tuple[Observation, ...]] = {}
        self._reading_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._failing = False

    def values(self, gauge: str) -> tuple[Observation, ...]:
        """The values of GAUGE in the last successful reading; empty before the first."""
        with self._reading_lock:
            return self._reading.get(gauge, ())

    def callback(self, gauge: str, pid: int | None) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """The callback of GAUGE: the last values, at once (the options' timeout is never needed); nothing outside process PID."""
        if pid is None:
            return lambda options: self.values(gauge)
        return lambda options: self.values(gauge) if os.getpid() == pid else ()

    def refresh(self) -> bool:
        """Read the source and keep what it gives; on failure keep the old values. Return whether the broker answered."""
        with self._refresh_lock:
            try:
                reading = {gauge: tuple(observations) for gauge, observations in self.source.read().items()}
            except Exception as error:  # whatever a broker client raises, the refresher lives on
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "%s does not answer (%s: %.200s); its gauges keep the last known values until it does",
                        self.name,
                        type(error).__name__,
                        error,
                    )
                return False
            with self._reading_lock:
                self._reading = reading
            if self._failing:
                self._failing = False
                logger.info("%s answers again; its gauges are current", self.name)
            return True


class GaugeRefresher:
    """The gauges of some sources, and one thread per source that keeps them current."""

    def __init__(
        self,
        sources: Mapping[str, GaugeSource],
        meter_provider: MeterProvider | None = None,
        interval_s: float = 2.0,
        *,
        this_process_only: bool = False,
    ) -> None:
        """Create the gauges of SOURCES ({name in log messages: source}) on METER_PROVIDER (default: the global one).

        Once started, every source is read every INTERVAL_S. Sources reporting the same gauge share one instrument.
        With THIS_PROCESS_ONLY, processes forked from this one (a Celery worker's pool) report nothing: their
        copy of the provider would otherwise export this process's values again.
        """
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self._interval_s = interval_s
        self._sources = [_LastKnown(name, source) for name, source in sources.items()]
        specs: dict[str, GaugeSpec] = {}
        callbacks: dict[str, list[Callable[[CallbackOptions], Iterable[Observation]]]] = {}
        for last in self._sources:
            for spec in last.source.gauges:
                specs.setdefault(spec.name, spec)
                callbacks.setdefault(spec.name, []).append(last.callback(spec.name, os.getpid() if this_process_only else None))
        meter = metrics.get_meter("hoptrace", meter_provider=meter_provider)
        for name, spec in specs.items():
            meter.create_observable_gauge(name, callbacks[name], spec.unit, spec.description)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def values(self, gauge: str) -> tuple[Observation, ...]:
        """What GAUGE reports now, over all sources."""
        return tuple(value for last in self._sources for value in last.values(gauge))

    def refresh_once(self) -> None:
        """Read every source now, one after the other, in the calling thread."""
        with suppress_instrumentation():  # our own broker reads are not the user's traffic
            for last in self._sources:
                last.refresh()

    def start(self) -> None:
        """Start refreshing in the background: one daemon thread per source, so a slow broker does not hold up another."""
        if self._threads:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._refresh_until_stopped, args=(last,), name=f"hoptrace-gauges-{last.name}", daemon=True)
            for last in self._sources
        ]
        for thread in self._threads:
            thread.start()

    def _refresh_until_stopped(self, last: _LastKnown) -> None:
        # A stock Redis or Kafka instrumentation would make every read a new root trace.
        with suppress_instrumentation():
            while True:
                last.refresh()
                if self._stopping.wait(self._interval_s):
                    return

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the threads (waiting at most TIMEOUT_S for each refresh under way) and close the broker connections.

        The gauges keep reporting the last values.
        """
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []
        for last in self._sources:
            last.source.close()
