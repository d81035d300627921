"""hoptrace's counters and histograms, created once per process (after any fork) from an injected meter provider.

Attributes stay low-cardinality (``pipeline.attributes``, plus outcome and error type); job
ids and payload fields never become metric attributes.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import semconv
from hoptrace.pipeline.telemetry.histograms import DRAIN_AT, LocalHistogram
from hoptrace.pipeline.telemetry.metric_producer import local_histograms, selected_by_views

Attributes = Mapping[str, AttributeValue]


class CountSeries:
    """One attribute set of a ``Tally``: ``add`` appends to a queue (atomic under the GIL: no lock, no hashing), summed in batches."""

    __slots__ = ("_lock", "_pending", "_total", "counted")

    def __init__(self) -> None:
        """Nothing counted yet."""
        self._pending: deque[float] = deque()
        self._lock = threading.Lock()
        self._total: float = 0
        self.counted = False
        """Whether anything was ever added (a series nothing was added to is not reported)."""

    def add(self, amount: float) -> None:
        """Count AMOUNT (negative for an up-down count); may be called from any thread."""
        pending = self._pending
        pending.append(amount)
        if len(pending) >= DRAIN_AT:
            self.total()

    def total(self) -> float:
        """Everything counted so far (the queued amounts summed in)."""
        with self._lock:
            pending = self._pending
            if pending:
                self.counted = True
                total, take = self._total, pending.popleft
                for _ in range(len(pending)):
                    total += take()
                self._total = total
            return self._total


class Tally:
    """A count kept in the process and reported by an observable instrument at collection.

    Per-message code holds a ``series`` per attribute set and adds to it: an append, not an SDK
    measurement (attribute validation and hashing, a lock). ``add`` with attributes looks the
    series up first. Attribute dicts must be built in a fixed key order.
    """

    def __init__(self) -> None:
        """Start with nothing counted."""
        self._series: dict[tuple[tuple[str, AttributeValue], ...], CountSeries] = {}
        self._lock = threading.Lock()

    def series(self, attributes: Attributes) -> CountSeries:
        """The series of ATTRIBUTES, made on first use."""
        key = tuple(attributes.items())
        found = self._series.get(key)
        if found is None:
            with self._lock:
                found = self._series.setdefault(key, CountSeries())
        return found

    def add(self, amount: float, attributes: Attributes) -> None:
        """Count AMOUNT (negative for an up-down count) for ATTRIBUTES."""
        self.series(attributes).add(amount)

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """The totals so far, one observation per attribute set (an observable instrument's callback)."""
        with self._lock:
            series = list(self._series.items())
        found = []
        for key, each in series:
            total = each.total()
            if each.counted:
                found.append(Observation(total, dict(key)))
        return found


SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
"""Bucket boundaries of hoptrace's duration histograms, in seconds: 1 ms to 1 hour."""


_made: weakref.WeakKeyDictionary[MeterProvider, Instruments] = weakref.WeakKeyDictionary()
_before_global: Instruments | None = None
_made_lock = threading.Lock()


@contextmanager
def set_aside_before_global() -> Iterator[None]:
    """For the duration, a global meter provider's instruments are its own, not those made before any global was set.

    For ``hoptrace.testing.capture_telemetry``, which sets a new global provider for a while (the API
    allows only one per process otherwise): counts made before it must not run on into it.
    """
    global _before_global
    with _made_lock:
        saved, _before_global = _before_global, None
    try:
        yield
    finally:
        with _made_lock:
            _before_global = saved


class Instruments:
    """Every counter and histogram hoptrace records, on one meter.

    Counts are ``Tally`` objects behind observable counters. Durations are aggregated in the
    process (``LocalHistogram``: an SDK ``Histogram.record`` costs several times more) and
    handed to every reader of the provider by ``metric_producer``; a histogram that a View of
    the provider selects, or any on a provider hoptrace cannot attach to, is a plain SDK one.
    """

    @classmethod
    def of(cls, meter_provider: MeterProvider | None = None) -> Instruments:
        """The instruments of METER_PROVIDER (default: the global one), made on first use and shared after.

        An observable instrument registered twice under one name keeps its first callback only,
        so every publisher and processor of a provider must count into the same instruments.
        Instruments made before any global provider was set (on the API's proxy) follow the global
        provider once one is set, so they are the global provider's instruments from then on.
        """
        global _before_global
        provider = meter_provider or metrics.get_meter_provider()
        with _made_lock:
            if provider in _made:
                return _made[provider]
            unset = type(provider).__name__ == "_ProxyMeterProvider"
            if unset or (_before_global is not None and provider is metrics.get_meter_provider()):
                _before_global = _before_global or cls(provider)
                return _before_global
            _made[provider] = cls(provider)
            return _made[provider]

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        """Create the instruments on METER_PROVIDER (default: the global one); ``Instruments.of`` shares them."""
        provider = meter_provider or metrics.get_meter_provider()
        meter = metrics.get_meter("hoptrace", meter_provider=provider)
        local = local_histograms(provider, SECONDS_BUCKETS)

        def histogram(name: str, description: str) -> Histogram | LocalHistogram:
            sdk = meter.create_histogram(name, "s", description, explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
            if local is None or selected_by_views(provider, sdk):
                return sdk
            return local.create(name, "s", description)

        def counter(name: str, description: str) -> Tally:
            tally = Tally()
            meter.create_observable_counter(name, [tally.observe], "{message}", description)
            return tally

        self.sent = counter(semconv.SENT_MESSAGES, "Messages published, per outcome.")
        self.consumed = counter(semconv.CONSUMED_MESSAGES, "Messages handed to a worker.")
        self.retries = counter(semconv.RETRIES, "Handler attempts that failed and were tried again.")
        self.dead_lettered = counter(semconv.DEAD_LETTERED, "Messages parked on a dead-letter destination.")
        self.redeliveries = counter(semconv.REDELIVERIES, "Messages the transport handed to a consumer again (at least once, made visible).")
        self.fallbacks = counter(semconv.PROPAGATION_FALLBACKS, "Messages whose trace headers were broken and were processed as new roots.")
        self.in_flight = Tally()
        meter.create_observable_up_down_counter(semconv.IN_FLIGHT, [self.in_flight.observe], "{message}", "Messages being processed now.")
        self.process_duration = histogram(semconv.PROCESS_DURATION, "Handler time per message.")
        self.queue_wait = histogram(semconv.QUEUE_WAIT, "Publish to start of processing: time spent in the queue.")
        self.job_latency = histogram(semconv.JOB_LATENCY, "Job start to the end of this stage.")
        self.pathway_latency = histogram(semconv.PATHWAY_LATENCY, "Job start to the end of this stage, per pathway: the stages the job went through.")
        self.operation_duration = histogram(semconv.OPERATION_DURATION, "Publish time until the broker accepted the message.")
