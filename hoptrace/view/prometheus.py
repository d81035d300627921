"""Asking a Prometheus server, through its HTTP API: instant PromQL queries.

``PrometheusQuery`` is the small client the stage table (``prometheus_stages``) and the tests
use: ``GET /api/v1/query`` (an instant vector, or a scalar).
Every failure is a ``PrometheusError`` whose message says what to do: the address is wrong,
Prometheus is down, or the query was refused (with Prometheus' reason).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode

from hoptrace.view.json_api import JsonApi

ADDRESS_HINT = "Prometheus' HTTP API (port 9090 by default, e.g. http://localhost:9090)"


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or refused the query; the message says what to do."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value (NaN stays NaN: an empty histogram's quantile)."""

    labels: Mapping[str, str]
    value: float


def label_matcher(name: str, value: str, operator: str = "=") -> str:
    """``name="value"`` (or another OPERATOR: ``=~``, ``!=``, ``!~``) with VALUE quoted as PromQL strings are."""
    return f"{name}{operator}{json.dumps(value)}"


class PrometheusQuery(JsonApi):
    """A Prometheus server's HTTP API."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        """Ask the Prometheus at BASE_URL (with its path prefix, if it has one), waiting TIMEOUT_S per request."""
        super().__init__(base_url, timeout_s, PrometheusError(f"{base_url!r} is not a Prometheus URL: give the address of {ADDRESS_HINT}"))

    def _get(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        """The ``data`` of Prometheus' JSON answer to GET PATH; PrometheusError otherwise."""

        def refused(error: HTTPError) -> Exception | bytes:
            if error.code == 404:
                return PrometheusError(f"{self.base_url} answered 404 Not Found for {path}: give the address of {ADDRESS_HINT}")
            return error.read()  # Prometheus explains a refused query in its JSON

        def unreachable(reason: object) -> Exception:
            return PrometheusError(f"cannot reach Prometheus at {self.base_url} ({reason}): start it, or give the address of {ADDRESS_HINT}")

        answer = self._get_json(f"{self.base_url}{path}?{urlencode(params)}", refused, unreachable)
        if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
            raise PrometheusError(f"{self.base_url}{path} did not answer with Prometheus' JSON: is {self.base_url} the address of {ADDRESS_HINT}?")
        if answer["status"] == "error":
            raise PrometheusError(f"Prometheus at {self.base_url} refused {path} ({answer.get('errorType')}): {answer.get('error')}")
        return answer.get("data")

    def query(self, promql: str, at_s: float | None = None) -> list[Sample]:
        """The instant vector PROMQL gives at AT_S (epoch seconds; Prometheus' now when None); a scalar is one unlabelled sample."""
        params = [("query", promql)] + ([("time", f"{at_s:.3f}")] if at_s is not None else [])
        data = self._get("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [Sample({}, float(result[1]))]
        if kind != "vector":
            raise PrometheusError(f"{promql!r} gives a {kind}, not an instant vector: ask for one value per series")
        return [Sample(dict(item["metric"]), float(item["value"][1])) for item in result]


def finite(value: float) -> float | None:
    """VALUE, or None when it is NaN or infinite (a quantile of no observations, or past the last bucket)."""
    return value if math.isfinite(value) else None
