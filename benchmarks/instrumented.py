"""Which instrumentation kafka-python and Celery run with in this process: ``none``, ``stock``, ``hoptrace`` (or both, ``+``-joined).

The zero-code sections (``benchmarks.zerocode``) start unchanged apps under ``opentelemetry-instrument``
and set nothing up themselves, so their helper processes (the relay's feeder, the Celery
publisher) look at what the loader really did and report it: the modules of the wrappers
around kafka-python's ``KafkaProducer.send`` and ``KafkaConsumer.__next__``, and of Celery's
``Celery.send_task`` wrappers and publish / task-run signal receivers. A run whose processes
report another instrumentation than its variant's fails instead of being mislabelled.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any

ORIGINS = (("hoptrace.", "hoptrace"), ("opentelemetry.instrumentation.", "stock"))
"""Module prefixes of instrumentation code, and what each is called."""


def _origin(code: Any) -> str | None:
    """``hoptrace`` or ``stock`` when CODE (a function, bound method, wrapper) belongs to an instrumentation, else None."""
    module = getattr(code, "__module__", None) or ""
    return next((name for prefix, name in ORIGINS if module.startswith(prefix)), None)


def _wrappers(method: Any) -> Iterator[Any]:
    """The wrapper functions of every wrapt layer around METHOD, outermost first."""
    while hasattr(method, "_self_wrapper"):
        yield method._self_wrapper  # noqa: SLF001 - wrapt's record of the wrapper
        method = method.__wrapped__


def _receivers(signal: Any) -> Iterator[Any]:
    """The live receivers connected to a Celery SIGNAL."""
    for _, receiver in signal.receivers:
        yield receiver() if isinstance(receiver, weakref.ReferenceType) else receiver


def _named(found: Iterable[str | None]) -> str:
    return "+".join(sorted({origin for origin in found if origin})) or "none"


def kafka() -> str:
    """The instrumentation of kafka-python's producer and iterating consumer in this process."""
    from kafka import KafkaConsumer, KafkaProducer

    return _named(_origin(wrapper) for method in (KafkaProducer.send, KafkaConsumer.__next__) for wrapper in _wrappers(method))


def celery() -> str:
    """The instrumentation of Celery's publishing and task runs in this process."""
    from celery import Celery, signals

    wrapped = [_origin(wrapper) for wrapper in _wrappers(Celery.send_task)]
    connected = [_origin(receiver) for signal in (signals.before_task_publish, signals.task_prerun) for receiver in _receivers(signal)]
    return _named([*wrapped, *connected])
