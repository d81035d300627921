"""The part every HTTP API client of the viewer shares (Jaeger's query service, Prometheus): address, timeout, GET of JSON.

Each client keeps its own error class and messages, and its own reading of the answer; this
module only checks the address it is given, sends the request and turns an unreachable server
into the client's error.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen


class JsonApi:
    """A server's HTTP API answering GETs with JSON, at a checked base URL, within a timeout per request."""

    def __init__(self, base_url: str, timeout_s: float, bad_url: Exception) -> None:
        """Ask the server at BASE_URL (with its path prefix, if it has one), waiting TIMEOUT_S per request.

        BAD_URL is raised when BASE_URL is not an http(s) address.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad_url
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _get_json(self, url: str, refused: Callable[[HTTPError], Exception | bytes], unreachable: Callable[[object], Exception]) -> Any:
        """The JSON answer to GET URL; None when the body is not JSON.

        An HTTP error status goes to REFUSED, which gives the exception to raise or the body to
        read the answer from; a server that cannot be reached raises UNREACHABLE(reason).
        """
        request = Request(url, headers={"Accept": "application/json", "User-Agent": "hoptrace"})
        try:
            with urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except HTTPError as error:
            outcome = refused(error)
            if isinstance(outcome, Exception):
                raise outcome from error
            body = outcome
        except (URLError, OSError, http.client.HTTPException) as error:
            raise unreachable(getattr(error, "reason", None) or error) from error
        try:
            return json.loads(body)
        except ValueError:
            return None
