"""How a keep made in one process reaches the pipeline's others: a Redis pub/sub channel on the broker the pipeline already has.

The upstream stages of a job that went wrong ran in other processes, long ago; their spans sit
in those processes' flight recorders. A keep is published as ``<trace id hex> <reason>`` on
``<namespace>hoptrace.keep``; every process with a recorder listens there and keeps the trace
too. Pub/sub, not a list or a stream: a keep is for the processes alive now (a process that
starts later holds nothing of the job), and one publish reaches all of them in one round trip.
Later hops need no message at all: the trace is sampled in the process that kept it, so the
``traceparent`` it sends on says sampled.

Both threads are daemons and never hold up the pipeline: the announcer takes keeps from a
bounded queue (a full queue drops the keep, logged), and both reconnect after a broker outage.
"""

from __future__ import annotations

import logging
import queue
import threading

import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from hoptrace.pipeline.recorder import MAX_REASON, FlightRecorder, current, install
from hoptrace.pipeline.settings import Settings

_logger = logging.getLogger(__name__)

CHANNEL = "hoptrace.keep"
WHOLE, PARTIAL = "w", "p"
"""The flag of a keep message: the trace is whole as far as the keeping process knows, or spans of it are gone."""
PENDING = 10_000
"""Keeps waiting to be announced, at most (a broker outage longer than that many keeps drops the newest, logged)."""
RECONNECT_S = 1.0
SOCKET_TIMEOUT_S = 5.0


class KeepChannel:
    """Announces this process's keeps and keeps the traces other processes announce, over Redis at REDIS_URL."""

    def __init__(self, recorder: FlightRecorder, redis_url: str, namespace: str = "") -> None:
        """Listen and announce for RECORDER on ``<NAMESPACE>hoptrace.keep`` at REDIS_URL (threads start with ``start``)."""
        self.channel = f"{namespace}{CHANNEL}"
        self._recorder = recorder
        self._redis_url = redis_url
        self._pending: queue.Queue[str] = queue.Queue(PENDING)
        self._stopping = threading.Event()
        self._listening = threading.Event()

    def start(self) -> None:
        """Start the announcing and the listening thread."""
        for target, name in ((self._announce_pending, "announce"), (self._listen, "listen")):
            threading.Thread(target=target, name=f"hoptrace-keep-{name}", daemon=True).start()

    def wait_listening(self, timeout_s: float) -> bool:
        """Wait until the listener is subscribed; whether it is (tests use it: a keep announced earlier goes unheard)."""
        return self._listening.wait(timeout_s)

    def announce(self, trace_id: int, reason: str, partial: bool = False) -> None:
        """Queue TRACE_ID's keep for REASON (PARTIAL: spans of it are gone) for the other processes; never blocks."""
        try:
            self._pending.put_nowait(f"{trace_id:032x} {PARTIAL if partial else WHOLE} {reason}")
        except queue.Full:
            _logger.warning("the flight recorder's keep of trace %032x (%s) was not announced: %d keeps wait already", trace_id, reason, PENDING)

    def stop(self) -> None:
        """Stop both threads (they exit at their next wake-up)."""
        self._stopping.set()

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self._redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)

    def _announce_pending(self) -> None:
        client = self._client()
        while not self._stopping.is_set():
            try:
                message = self._pending.get(timeout=RECONNECT_S)
            except queue.Empty:
                continue
            failing = False
            while not self._stopping.is_set():
                try:
                    client.publish(self.channel, message)
                    break
                except redis.RedisError as error:
                    if not failing:  # once per outage
                        failing = True
                        _logger.warning("could not announce a kept job on %s (%s); trying again until it is", self.channel, error)
                    self._stopping.wait(RECONNECT_S)

    def _listen(self) -> None:
        failing = False
        while not self._stopping.is_set():
            subscription = self._client().pubsub(ignore_subscribe_messages=True)
            try:
                subscription.subscribe(self.channel)
                self._listening.set()
                if failing:
                    failing = False
                    _logger.info("listening on the flight recorder's channel %s again", self.channel)
                while not self._stopping.is_set():
                    message = subscription.get_message(timeout=RECONNECT_S)
                    if message is not None:
                        self._heard(message["data"])
            except redis.RedisError as error:
                self._listening.clear()
                if not failing:  # once per outage
                    failing = True
                    _logger.warning(
                        "lost the flight recorder's channel %s (%s); keeps of other processes go unheard until it is back", self.channel, error
                    )
                self._stopping.wait(RECONNECT_S)
            finally:
                subscription.close()

    def _heard(self, data: bytes) -> None:
        """Keep the trace another process announced; anything else on the channel is logged and ignored."""
        text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
        trace_hex, _, rest = text.partition(" ")
        whole, _, reason = rest.partition(" ")
        try:
            trace_id = int(trace_hex, 16)
        except ValueError:
            trace_id = 0
        valid = len(trace_hex) == 32 and trace_id and whole in (WHOLE, PARTIAL) and reason and reason.isprintable() and len(reason) <= MAX_REASON
        if not valid:
            _logger.warning("ignored a message on %s that is not '<32 hex digits> <w|p> <reason>': %.80r", self.channel, text)
            return
        self._recorder.keep(trace_id, reason, partial=whole == PARTIAL, announce=False)


def start_flight_recorder(tracer_provider: TracerProvider, meter_provider: MeterProvider, settings: Settings) -> FlightRecorder | None:
    """Record TRACER_PROVIDER's unsampled spans in a new flight recorder (this process's), joined to the pipeline's others by a channel.

    Its bound, and the Redis and namespace of the channel, are SETTINGS'; its gauges and counters go to METER_PROVIDER.
    The provider's shutdown shuts it down (its channel too). None when SETTINGS turn the recorder off, or when this
    process has one already (hoptrace's own workers and drop-in instrumentation in one process share it).
    """
    if not settings.recorder or current() is not None:
        return None
    recorder = FlightRecorder(settings.recorder_max_bytes, meter_provider)
    channel = KeepChannel(recorder, settings.redis_url, settings.namespace)
    recorder.attach(tracer_provider, channel)
    tracer_provider.add_span_processor(recorder)
    channel.start()
    install(recorder)
    return recorder
