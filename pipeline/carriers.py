"""Message headers in each transport's own shape: one getter and one setter per shape.

- Kafka (kafka-python, confluent-kafka, aiokafka): a list of ``(str, bytes)`` pairs; a key may repeat.
- A dict of str: Celery's message headers, and the neutral form a publisher builds.
- A Celery task request: on the worker, custom message headers come back as attributes of
  ``task.request`` (and some clients nest them again under ``request.headers``).

Getters hand out raw values, exactly as the broker delivered them (bytes, str, ``None``,
anything): deciding what is usable is ``propagation.extract``'s job. Setters are
OpenTelemetry ``Setter`` s, so the global propagator writes through them, and they replace a
key that is already there, in any letter case, instead of adding a second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry.propagators.textmap import Setter

KafkaHeaders = list[tuple[str, bytes]]
"""The Kafka clients' header form: what kafka-python's ``send(headers=...)`` and confluent-kafka's ``produce`` take and their records hold."""
RawPairs = list[tuple[str, object]]
"""``(lower-case key, raw value)`` for each header a getter found, in message order, repeats kept."""


def _text_key(key: object) -> str:
    """KEY as lower-case text (a broker may deliver bytes keys)."""
    return (key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)).lower()


def kafka_pairs(headers: Iterable[tuple[object, object]] | None, keys: frozenset[str]) -> RawPairs:
    """The headers among KEYS (lower case) of a Kafka record's header list, raw."""
    found: RawPairs = []
    for key, value in headers or ():
        lowered = _text_key(key)
        if lowered in keys:
            found.append((lowered, value))
    return found


def dict_pairs(headers: Mapping[Any, object] | None, keys: frozenset[str]) -> RawPairs:
    """The headers among KEYS (lower case) of a dict of headers (any key case), raw."""
    found: RawPairs = []
    for key, value in (headers or {}).items():
        lowered = _text_key(key)
        if lowered in keys:
            found.append((lowered, value))
    return found


def celery_request_pairs(request: object, keys: frozenset[str]) -> RawPairs:
    """The headers among KEYS of a Celery task request: its attributes, then a nested ``headers`` dict.

    Reads only the wanted attributes (no scan of the request's ~45 fields). A header that
    is both an attribute and nested comes back twice, so a mismatch counts as a duplicate.
    """
    fields = getattr(request, "__dict__", {})
    found: RawPairs = [(key, fields[key]) for key in keys if key in fields]
    nested = fields.get("headers")
    if isinstance(nested, Mapping):
        found += dict_pairs(nested, keys)
    return found


class KafkaHeadersSetter(Setter[KafkaHeaders]):
    """Sets a header on a Kafka header list: every copy of the key (any case) goes, one ``(key, utf-8)`` pair comes."""

    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        """Replace KEY in CARRIER (in place) with VALUE, UTF-8 encoded, appended at the end."""
        lowered = key.lower()
        carrier[:] = [pair for pair in carrier if _text_key(pair[0]) != lowered]
        carrier.append((key, value.encode("utf-8")))


class DictHeadersSetter(Setter[MutableMapping[str, Any]]):
    """Sets a header in a dict of headers: a key already there in another letter case goes first."""

    def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
        """Replace KEY in CARRIER (in place) with VALUE."""
        lowered = key.lower()
        for other in [other for other in carrier if other != key and isinstance(other, str) and other.lower() == lowered]:
            del carrier[other]
        carrier[key] = value


class FreshDictSetter(Setter[MutableMapping[str, Any]]):
    """Sets a header in a dict of headers that holds no propagation key in any letter case (a publisher's own, already cleaned)."""

    def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
        """Set KEY in CARRIER to VALUE (nothing to replace: the dict has no other copy of it)."""
        carrier[key] = value


class AppendSetter(Setter[KafkaHeaders]):
    """Sets a header on a Kafka header list that only this setter wrote to (it started empty): keys are compared exactly."""

    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        """Put ``(KEY, VALUE as UTF-8)`` in CARRIER, in place of a pair this setter wrote for KEY before."""
        pair = (key, value.encode("utf-8"))
        for index, (other, _) in enumerate(carrier):
            if other == key:
                carrier[index] = pair
                return
        carrier.append(pair)


KAFKA_SETTER = KafkaHeadersSetter()
"""The setter for Kafka header lists."""
DICT_SETTER = DictHeadersSetter()
"""The setter for header dicts (Celery messages)."""
APPEND_SETTER = AppendSetter()
"""The setter for an empty Kafka header list (a send without headers of its own)."""
FRESH_DICT_SETTER = FreshDictSetter()
"""The setter for a publisher's neutral headers, from which every propagation key was removed first."""


def kafka_headers(headers: Mapping[str, str]) -> KafkaHeaders:
    """A publisher's neutral HEADERS as a Kafka header list of ``(str, bytes)`` (a key appears once, in any case: the last one wins)."""
    pairs = [(key, value.encode()) for key, value in headers.items()]
    if len({key.lower() for key, _ in pairs}) == len(pairs):  # the usual case: no key repeats in another letter case
        return pairs
    carrier: KafkaHeaders = []
    for key, value in headers.items():
        KAFKA_SETTER.set(carrier, key, value)
    return carrier
