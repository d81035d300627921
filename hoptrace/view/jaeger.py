"""Reading traces from a deployed Jaeger instead of the embedded store, through Jaeger's query HTTP API.

``JaegerQuery`` answers what ``SqliteTraceStore`` answers for ``hoptrace traces`` and
``hoptrace trace ID``: the spans of one trace (``GET /api/traces/{id}``) and summaries of the
newest traces (``GET /api/traces?service=…`` per service of ``GET /api/services``), summarised
exactly as the store summarises its own.

``spans_from_jaeger`` turns a trace of Jaeger's JSON back into ``ReceivedSpan`` records: ids
become 32/16-digit lowercase hex, the first ``CHILD_OF`` reference within the trace is the
parent and every other reference a link, typed tags become attributes of their type (binary
ones bytes), ``span.kind`` the kind, ``otel.status_code``/``otel.status_description`` (or the
``error`` flag) the status, ``otel.scope.name``/``otel.library.name`` the scope, logs events
(their ``event`` field the name), the process's service name and tags the resource, and
microseconds nanoseconds. What Jaeger cannot give back: times finer than a microsecond, event
times, link attributes, and the types of array and map attributes (the OTLP-to-Jaeger
translation stores them as JSON text, which stays a string here).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, urlencode

from hoptrace.pipeline import semconv
from hoptrace.view.json_api import JsonApi
from hoptrace.view.otlp_decode import Attributes, ReceivedSpan

# The summaries are made by the store's own code, so both sources show a job's status alike.
from hoptrace.view.queries import TraceSummary, summarize

DEFAULT_PORT_HINT = "Jaeger's query service (the UI address, port 16686 by default)"
_KINDS = {"client": "CLIENT", "server": "SERVER", "producer": "PRODUCER", "consumer": "CONSUMER", "internal": "INTERNAL"}
_TRANSLATION_TAGS = frozenset({"otel.scope.version", "otel.library.version", "internal.span.format", "w3c.tracestate"})
"""Tags that the OTLP-to-Jaeger translation or Jaeger itself adds: not attributes of the span, dropped."""
_TRACE_ID = re.compile(r"[0-9a-fA-F]{1,32}")
SLOWEST_POOL = (100, 500)
"""For the N slowest traces Jaeger is asked for 10 * N per service, at least the first and at most the second of these (never fewer than N)."""


def slowest_pool(limit: int) -> int:
    """How many traces per service Jaeger is asked for to find the LIMIT slowest (it cannot sort by duration): see ``SLOWEST_POOL``."""
    low, high = SLOWEST_POOL
    return max(limit, min(10 * limit, high), low)


class JaegerError(RuntimeError):
    """Jaeger could not be asked, or did not answer as Jaeger does; the message says what to do."""


def _hex_id(value: object, digits: int) -> str:
    """A Jaeger trace or span id (hex, leading zeros possibly dropped) as DIGITS lowercase hex digits."""
    text = str(value).lower()
    if not text or len(text) > digits or re.fullmatch(r"[0-9a-f]+", text) is None:
        raise ValueError(f"not a {digits}-digit hex id: {value!r}")
    return text.zfill(digits)


def tag_value(tag: Mapping[str, Any]) -> Any:
    """The value of one Jaeger tag or log field as its type says: str, bool, int, float, or bytes (binary, base64 in JSON)."""
    kind, value = str(tag.get("type", "string")).lower(), tag["value"]
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "int64":
        return int(value)  # Jaeger sends integers beyond 2**53 as decimal text
    if kind == "float64":
        return float(value)
    if kind == "binary":
        return base64.b64decode(str(value))
    return value if isinstance(value, str) else json.dumps(value)


def _tags(tags: Iterable[Mapping[str, Any]] | None) -> Attributes:
    """Jaeger tags as attributes (a key given twice keeps its last value)."""
    return {str(tag["key"]): tag_value(tag) for tag in tags or ()}


def _span(raw: Mapping[str, Any], processes: Mapping[str, Any]) -> ReceivedSpan:
    """One span of Jaeger's JSON as a record; KeyError, TypeError or ValueError when it is not shaped like one."""
    trace_id, span_id = _hex_id(raw["traceID"], 32), _hex_id(raw["spanID"], 16)
    parent: str | None = None
    links: list[tuple[str, str, Attributes]] = []
    for reference in raw.get("references") or ():
        ref_trace, ref_span = _hex_id(reference["traceID"], 32), _hex_id(reference["spanID"], 16)
        if parent is None and reference.get("refType") == "CHILD_OF" and ref_trace == trace_id:
            parent = ref_span
        else:
            links.append((ref_trace, ref_span, {}))
    if parent is None and raw.get("parentSpanID") and int(str(raw["parentSpanID"]), 16):  # older Jaeger JSON
        parent = _hex_id(raw["parentSpanID"], 16)

    attributes = _tags(raw.get("tags"))
    kind = _KINDS.get(str(attributes.pop("span.kind", "internal")).lower(), "INTERNAL")
    status = str(attributes.pop("otel.status_code", "")).upper()
    message = str(attributes.pop("otel.status_description", ""))
    error = attributes.pop("error") if isinstance(attributes.get("error"), bool) else None
    if status not in ("OK", "ERROR"):
        status = "ERROR" if error else "UNSET"
    scope = attributes.pop("otel.scope.name", None)
    library = attributes.pop("otel.library.name", None)
    for key in _TRANSLATION_TAGS:
        attributes.pop(key, None)

    events = []
    for log in raw.get("logs") or ():
        fields = _tags(log.get("fields"))
        name = fields.pop("event", "")
        events.append((name if isinstance(name, str) else str(name), fields))

    process = raw.get("process") or processes[raw["processID"]]
    resource: Attributes = {"service.name": process.get("serviceName", ""), **_tags(process.get("tags"))}
    start_ns = int(raw["startTime"]) * 1000
    return ReceivedSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=str(raw.get("operationName", "")),
        kind=kind,
        start_ns=start_ns,
        end_ns=start_ns + int(raw.get("duration", 0)) * 1000,
        attributes=attributes,
        status_code=status,
        status_message=message,
        events=tuple(events),
        links=tuple(links),
        resource=resource,
        scope_name=str(scope or library or ""),
    )


def spans_from_jaeger(trace: Mapping[str, Any]) -> list[ReceivedSpan]:
    """The spans of one trace of Jaeger's JSON (an item of ``data``), by start time; JaegerError when it is malformed."""
    try:
        processes = trace.get("processes") or {}
        spans = [_span(raw, processes) for raw in trace.get("spans") or ()]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise JaegerError(f"Jaeger answered with a trace that is not shaped like Jaeger's JSON ({type(error).__name__}: {error})") from error
    return sorted(spans, key=lambda span: span.start_ns)


def _lookback(seconds: float) -> str:
    """A lookback as Jaeger's UI writes it: ``1h``, ``15m``, ``90s``."""
    whole = max(1, round(seconds))
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    return f"{whole // 60}m" if whole % 60 == 0 else f"{whole}s"


class JaegerQuery(JsonApi):
    """Traces from a Jaeger query service: what ``hoptrace traces`` and ``trace`` read when given a Jaeger URL."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        """Ask the Jaeger at BASE_URL (e.g. ``http://localhost:16686``, with its base path if it has one), waiting TIMEOUT_S per request."""
        bad_url = JaegerError(f"{base_url!r} is not a Jaeger URL: give the address of {DEFAULT_PORT_HINT}, e.g. http://localhost:16686")
        super().__init__(base_url, timeout_s, bad_url)

    def _get(self, path: str, params: Mapping[str, str | int] | None = None, not_found: str | None = None) -> Any:
        """The ``data`` of Jaeger's JSON answer to GET PATH; JaegerError (NOT_FOUND as its message on a 404, when given) otherwise."""
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")

        def unreachable(reason: object) -> Exception:
            return JaegerError(f"cannot reach Jaeger at {self.base_url} ({reason}): start Jaeger, or give the address of {DEFAULT_PORT_HINT}")

        answer = self._get_json(url, lambda error: self._refused(path, error, not_found), unreachable)
        if not isinstance(answer, dict) or "data" not in answer:
            raise JaegerError(f"{url} did not answer with Jaeger's JSON: is {self.base_url} the address of {DEFAULT_PORT_HINT}?")
        if answer.get("errors"):
            raise JaegerError(f"Jaeger at {self.base_url} could not answer {path}: {_messages(answer['errors'])}")
        return answer["data"]

    def _refused(self, path: str, error: HTTPError, not_found: str | None) -> JaegerError:
        """The JaegerError for an HTTP error status."""
        try:
            details = _messages(json.loads(error.read()).get("errors") or ())
        except (ValueError, AttributeError, OSError):
            details = ""
        if error.code == 404:
            if not_found is not None:
                return JaegerError(not_found)
            return JaegerError(
                f"Jaeger at {self.base_url} answered 404 Not Found for {path}: this is not Jaeger's query API; "
                f"give the address of {DEFAULT_PORT_HINT}, with its base path if Jaeger runs with --query.base-path"
            )
        return JaegerError(f"Jaeger at {self.base_url} answered {error.code} {error.reason} for {path}" + (f": {details}" if details else ""))

    def services(self) -> list[str]:
        """The names of the services Jaeger has spans of."""
        data = self._get("/api/services")
        return sorted(str(name) for name in data or ())

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of the trace TRACE_ID (hex), by start time; JaegerError when Jaeger does not have it."""
        if _TRACE_ID.fullmatch(trace_id) is None:
            raise JaegerError(f"{trace_id!r} is not a trace id: a trace id is 32 hex digits, as `hoptrace traces` lists them")
        wanted = trace_id.lower().zfill(32)
        not_found = (
            f"trace {wanted} is not in Jaeger at {self.base_url}: check the id, or wait a few seconds "
            "(exporters send spans in batches) — or it is older than Jaeger keeps traces"
        )
        data = self._get(f"/api/traces/{quote(wanted)}", not_found=not_found)
        spans = [span for trace in data or () for span in spans_from_jaeger(trace) if span.trace_id == wanted]
        if not spans:
            raise JaegerError(not_found)
        return sorted({span.span_id: span for span in spans}.values(), key=lambda span: span.start_ns)

    def recent_traces(
        self,
        limit: int = 20,
        stage: str | None = None,
        errors_only: bool = False,
        stuck_before_ns: int | None = None,
        service: str | None = None,
        lookback_s: float = 3600.0,
        slowest: bool = False,
    ) -> list[TraceSummary]:
        """Summaries of the LIMIT newest traces by start, newest first, that SERVICE (every service when None) took part in.

        Jaeger is asked for up to LIMIT traces per service that started in the last LOOKBACK_S seconds, filtered
        by Jaeger itself: STAGE by the ``hoptrace.stage`` tag; ERRORS_ONLY by each tag of ``failed_span_searches``
        (with STAGE, both on one span), the answers merged and every trace without such a failed span dropped.
        SLOWEST: the LIMIT slowest by end-to-end time instead, slowest first (newest first among equals). Jaeger's
        search cannot sort by duration, so it is asked for ``slowest_pool(LIMIT)`` traces per service (10 * LIMIT,
        100 to 500, never fewer than LIMIT) and they are sorted here: a slow job beyond that pool of the newest in
        the lookback is missed.
        A job in flight with nothing new since STUCK_BEFORE_NS is ``stuck``.
        """
        if limit < 1:
            return []
        searches = failed_span_searches(stage) if errors_only else [{semconv.STAGE: stage} if stage is not None else {}]
        traces = self.recent_spans(slowest_pool(limit) if slowest else limit, searches, service, lookback_s)
        if errors_only:
            traces = {trace_id: spans for trace_id, spans in traces.items() if any(_failed(span, stage) for span in spans)}
        summaries = [summarize(trace_id, spans, stuck_before_ns) for trace_id, spans in traces.items() if spans]
        summaries.sort(key=lambda summary: (summary.end_ns - summary.start_ns if slowest else 0, summary.start_ns, summary.trace_id), reverse=True)
        return summaries[:limit]

    def recent_spans(
        self, limit: int, searches: Sequence[Mapping[str, str]] = ({},), service: str | None = None, lookback_s: float = 3600.0
    ) -> dict[str, list[ReceivedSpan]]:
        """The spans of the newest traces, by trace id: up to LIMIT per service (SERVICE, or every one) and per tag search of SEARCHES.

        Jaeger answers each search with whole traces that started in the last LOOKBACK_S seconds; the answers are merged.
        """
        traces: dict[str, dict[str, ReceivedSpan]] = {}
        for name in [service] if service is not None else self.services():
            for tags in searches:
                for trace in self._search(name, tags, limit, lookback_s):
                    for span in spans_from_jaeger(trace):
                        traces.setdefault(span.trace_id, {})[span.span_id] = span
        return {trace_id: list(spans.values()) for trace_id, spans in traces.items()}

    def _search(self, service: str, tags: Mapping[str, str], limit: int, lookback_s: float) -> list[Any]:
        """``GET /api/traces``: up to LIMIT traces of SERVICE that started in the last LOOKBACK_S seconds with a span having TAGS."""
        now_us = time.time_ns() // 1000
        params: dict[str, str | int] = {
            "service": service,
            "limit": limit,
            "lookback": _lookback(lookback_s),
            "start": now_us - round(lookback_s * 1e6),
            "end": now_us,
        }
        if tags:
            params["tags"] = json.dumps(tags)
        return self._get("/api/traces", params) or []

    def close(self) -> None:
        """Nothing to release (every request has its own connection); here so a JaegerQuery stands in for a store."""

    def __enter__(self) -> JaegerQuery:
        """Return the query."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Close."""
        self.close()


FAILED_OUTCOMES = ("retried", "dead_lettered", "failed")
"""``hoptrace.outcome`` of a failed attempt's process span (hoptrace.pipeline.messages.Outcome, and ``retried``)."""


def failed_span_searches(stage: str | None = None) -> list[dict[str, str]]:
    """The tag searches that find traces with a failed span (of STAGE, when given).

    ``error=true`` is how Jaeger's v1 storage backends find a span whose status is ERROR; Jaeger v2's
    in-memory storage (v2.13) reads that string as the bool ``false`` and finds the spans whose
    status is OK instead. hoptrace's own failed attempts are also found by their ``hoptrace.outcome``,
    which every storage matches as it is.
    """
    where = {semconv.STAGE: stage} if stage is not None else {}
    return [{**where, "error": "true"}, *({**where, semconv.OUTCOME: outcome} for outcome in FAILED_OUTCOMES)]


def _failed(span: ReceivedSpan, stage: str | None) -> bool:
    """Whether SPAN has status ERROR (and is of STAGE, when given)."""
    return span.status_code == "ERROR" and (stage is None or span.attributes.get(semconv.STAGE) == stage)


def _messages(errors: Iterable[Any]) -> str:
    """Jaeger's ``errors`` list (``[{"code": 404, "msg": "trace not found"}]``) as one line."""
    return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in errors)
