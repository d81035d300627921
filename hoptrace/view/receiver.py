"""A real OTLP receiver (gRPC and HTTP/protobuf) that keeps what it receives in a telemetry store.

Tests of the whole project point worker processes' exporters at it; ``hoptrace watch`` embeds
it as its trace store. Both transports hand the raw request bytes to one ``_accept`` method,
which decodes them (``view.otlp_decode``), stores the records, and counts what it rejects.

What arrives is untrusted, and the receiver's memory stays bounded whatever it is sent:

- a request is at most ``MAX_MESSAGE_BYTES`` (8 MiB) on the wire *and* once gzip-inflated, on
  both transports (gRPC's own limit covers both, and stops inflating there; HTTP inflates one
  byte past it at most), and holds at most ``MAX_RECORDS`` spans, points or log records;
- at most ``MAX_CONCURRENT_EXPORTS`` requests per transport are held at once (beyond that:
  HTTP 503 with ``Retry-After``, gRPC ``RESOURCE_EXHAUSTED``, both retried by OTLP exporters),
  and at most ``MAX_CONCURRENT_DECODES`` are parsed at once (parsing holds the GIL anyway).
  Parsing costs up to ~90x a request's size for one made of empty nested messages (measured),
  so the worst case is about 2 x 750 MB while parsing plus 2 x 16 bodies of 8 MiB waiting;
- a body must arrive whole within ``BODY_DEADLINE_S`` of its headers (HTTP 408 after that), so a
  client trickling bytes holds a slot for seconds, not forever;
- it listens on 127.0.0.1 unless another host is given, and with a TOKEN takes only requests that
  carry ``authorization: Bearer <token>`` (HTTP 401, gRPC ``UNAUTHENTICATED`` otherwise; exporters
  send it with ``OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>``); with TLS (a
  certificate and its key) both transports speak only TLS (exporters: an ``https://`` endpoint and
  ``OTEL_EXPORTER_OTLP_CERTIFICATE``); listening beyond loopback without a token or without TLS is
  logged as a warning when it starts. A TLS handshake happens on the connection's own thread, so
  a client that stalls in it holds one HTTP connection, not the accepting loop.

Answers follow the OTLP specification: HTTP 200 with the empty Export*ServiceResponse; 400 for
a body that does not parse (or a malformed ``Content-Length``), 404 for another path, 405 for
another method, 411 without ``Content-Length``, 413 for too large, 415 for another content
type or encoding, 503 when busy, 500 when the store fails, each with a ``google.rpc.Status`` body
saying why. gRPC: ``INVALID_ARGUMENT`` for what does not parse, ``RESOURCE_EXHAUSTED`` for too large
or busy, ``INTERNAL`` when the store fails.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
from google.rpc.status_pb2 import Status

from hoptrace.view.otlp_decode import SIGNALS, ExportTooLarge, InvalidExport, MetricPoint, OtlpSignal, ReceivedLog, ReceivedSpan

logger = logging.getLogger(__name__)


class TelemetrySink(Protocol):
    """Where a receiver puts decoded telemetry: ``hoptrace watch``'s on-disk store (``sqlite_store``), a test's in-memory one."""

    def add_spans(self, spans: Iterable[ReceivedSpan]) -> None:
        """Keep received spans."""

    def add_metrics(self, points: Iterable[MetricPoint]) -> None:
        """Keep received metric data points."""

    def add_logs(self, logs: Iterable[ReceivedLog]) -> None:
        """Keep received log records."""


MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The largest export request accepted, on the wire and once inflated, on either transport (twice gRPC's default).

The SDKs' default batches (512 spans or log records) stay far below it, even with stack traces."""
MAX_RECORDS = 65_536
"""The most spans, metric points or log records one export request may hold (counted before decoding)."""
MAX_PARTS = 2**20
"""The most fields one export request's records may hold in all (ids, times, each attribute, event, link), counted before parsing.

An SDK batch of 512 spans with a dozen attributes each has about 10,000."""
MAX_CONCURRENT_EXPORTS = 16
"""Requests held at once per transport (bodies being read or waiting to be decoded); more are refused as busy."""
BODY_DEADLINE_S = 10.0
"""How long after its headers an HTTP request's body may take to arrive whole."""
MAX_CONCURRENT_DECODES = 2
"""Requests parsed and decoded at once, across both transports; the others wait their turn."""
PROTOBUF = "application/x-protobuf"
_SIGNALS_BY_PATH = {signal.path: signal for signal in SIGNALS}
_CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")
_DRAIN_CHUNK = 64 * 1024


class StoreFailed(RuntimeError):
    """The store raised while keeping an accepted export (answered HTTP 500 / gRPC ``INTERNAL``; not retried by exporters)."""


class OtlpReceiver:
    """OTLP over gRPC and HTTP/protobuf on local ports, storing into ``store``; a context manager.

    Port 0 (the default) means a free ephemeral port: read ``grpc_port``/``http_port`` (or the
    endpoints) after ``start()``. A stopped receiver can be started again, on the same ports.
    HOST is where both listen: loopback only unless another address is given.
    """

    def __init__(
        self,
        store: TelemetrySink,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        token: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """Receive into STORE on HOST's ports (0: any free one); with TOKEN, only requests that carry it as a bearer token.

        TLS is (certificate file, key file), PEM: both transports then serve TLS only.
        """
        self.store = store
        self.host = host
        self._authorization = None if token is None else f"Bearer {token}".encode()
        self._tls = tls
        self.grpc_port = grpc_port
        """The gRPC port; once started, the bound one."""
        self.http_port = http_port
        """The HTTP port; once started, the bound one."""
        self._running: tuple[grpc.Server, ThreadPoolExecutor, _OtlpHttpServer] | None = None
        self._rejected = 0
        self._lock = threading.Lock()
        self._decoding = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)

    @property
    def rejected(self) -> int:
        """How many export requests were refused after reading them: their body did not parse, or was too large inflated."""
        with self._lock:
            return self._rejected

    @property
    def grpc_endpoint(self) -> str:
        """``http://HOST:PORT`` (``https://`` with TLS) for a gRPC OTLP exporter."""
        return f"{self._scheme}://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://HOST:PORT`` (``https://`` with TLS) for an HTTP OTLP exporter; append ``/v1/traces`` etc. for one signal."""
        return f"{self._scheme}://{self.host}:{self.http_port}"

    @property
    def _scheme(self) -> str:
        return "http" if self._tls is None else "https"

    def start(self) -> None:
        """Bind both ports and start serving; raises RuntimeError when already running."""
        if self._running is not None:
            raise RuntimeError("the OTLP receiver is already running")
        if self._authorization is None and not _is_loopback(self.host):
            logger.warning(
                "the OTLP receiver listens on %s without a token: anyone who reaches it can write telemetry into the store;"
                " set HOPTRACE_RECEIVER_TOKEN, and send it from exporters with OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%%20<token>",
                self.host,
            )
        if self._tls is None and not _is_loopback(self.host):
            logger.warning(
                "the OTLP receiver listens on %s without TLS: telemetry (and a token) cross the network in clear text;"
                " set HOPTRACE_RECEIVER_TLS_CERTFILE and HOPTRACE_RECEIVER_TLS_KEYFILE",
                self.host,
            )
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc")
        server = grpc.server(
            executor,
            # gRPC checks the limit on the message as sent and while inflating it (RESOURCE_EXHAUSTED).
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
            maximum_concurrent_rpcs=MAX_CONCURRENT_EXPORTS,
        )
        for signal in SIGNALS:
            export: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(partial(self._grpc_export, signal))
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": export}),))
        address = f"{self.host}:{self.grpc_port}"
        if self._tls is None:
            self.grpc_port = server.add_insecure_port(address)
        else:
            certificate, key = (path.read_bytes() for path in self._tls)
            self.grpc_port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, certificate)]))
        http = _OtlpHttpServer((self.host, self.http_port), self._accept, self.authorized)
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            # The handshake happens on the connection's first read, in its handler's thread, not in the accepting loop.
            http.socket = context.wrap_socket(http.socket, server_side=True, do_handshake_on_connect=False)
        self.http_port = http.server_address[1]
        server.start()
        threading.Thread(target=http.serve_forever, args=(0.05,), name="otlp-http", daemon=True).start()
        self._running = (server, executor, http)

    def stop(self) -> None:
        """Stop serving on both transports (in-flight gRPC calls get one second); safe to call twice."""
        running, self._running = self._running, None
        if running is None:
            return
        server, executor, http = running
        server.stop(grace=1).wait()
        executor.shutdown(wait=False)
        http.shutdown()
        http.server_close()

    def __enter__(self) -> OtlpReceiver:
        """Start, and return the receiver."""
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Stop."""
        self.stop()

    def authorized(self, authorization: str | None) -> bool:
        """Whether a request with AUTHORIZATION (its header or metadata value) may export: always, without a token."""
        expected = self._authorization
        return expected is None or (authorization is not None and hmac.compare_digest(authorization.strip().encode(), expected))

    def _accept(self, signal: OtlpSignal, body: bytes, gzipped: bool = False) -> bytes:
        """Decode and store one export request body, and return the serialized response.

        Raises InvalidExport (ExportTooLarge when over a limit), counted as rejected, when the body
        is refused.
        """
        try:
            with self._decoding:
                records = signal.decode(body, gzipped, max_bytes=MAX_MESSAGE_BYTES, max_records=MAX_RECORDS, max_parts=MAX_PARTS)
        except InvalidExport:
            with self._lock:
                self._rejected += 1
            raise
        add: dict[str, Callable[[list[Any]], None]] = {
            "traces": self.store.add_spans,
            "metrics": self.store.add_metrics,
            "logs": self.store.add_logs,
        }
        try:
            add[signal.name](records)
        except Exception as error:  # a full disk, a value the store cannot hold: the exporter still gets an answer
            logger.warning("the telemetry store could not keep an export of %d %s: %r", len(records), signal.name, error)
            raise StoreFailed(f"the receiver's store failed: {error!r}"[:200]) from error
        return signal.response

    def _grpc_export(self, signal: OtlpSignal, body: bytes, context: grpc.ServicerContext) -> bytes:
        """The Export method of every OTLP gRPC service (gRPC itself undoes gzip compression, within the size limit)."""
        if not self.authorized(dict(context.invocation_metadata()).get("authorization")):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this receiver takes exports with its token only: authorization: Bearer <token>")
        try:
            return self._accept(signal, body)
        except ExportTooLarge as error:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            raise  # unreachable: abort() raises; this tells type checkers so
        except InvalidExport as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            raise  # unreachable, as above
        except StoreFailed as error:
            context.abort(grpc.StatusCode.INTERNAL, str(error))
            raise  # unreachable, as above


def _is_loopback(host: str) -> bool:
    """Whether HOST (a name or an address) is this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _OtlpHttpServer(ThreadingHTTPServer):
    """The HTTP server of the receiver: knows where accepted request bodies go, and how many it may hold."""

    def __init__(
        self, address: tuple[str, int], accept: Callable[[OtlpSignal, bytes, bool], bytes], authorized: Callable[[str | None], bool]
    ) -> None:
        super().__init__(address, _OtlpHttpHandler)
        self.accept = accept
        self.authorized = authorized
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT_EXPORTS)


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    """OTLP/HTTP with binary protobuf bodies: POST /v1/traces, /v1/metrics and /v1/logs."""

    server: _OtlpHttpServer
    timeout = 30.0
    """Seconds a silent client may hold a connection."""

    def do_POST(self) -> None:  # noqa: N802 (the name BaseHTTPRequestHandler dispatches to)
        """Answer 200 with the export response; or refuse: 401, 411, 400 (Content-Length), 413, 503, then 408, 404, 415, 400 / 413 (the body), 500."""
        if not self.server.authorized(self.headers.get("Authorization")):  # not read: the connection closes after the answer (HTTP/1.0)
            return self._refuse(401, "this receiver takes exports with its token only: Authorization: Bearer <token>")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return self._refuse(411, "a Content-Length header is required")
        if not _CONTENT_LENGTH.fullmatch(length_header.strip()):
            return self._refuse(400, "Content-Length is not a number")
        length = int(length_header)
        if length > MAX_MESSAGE_BYTES:  # not read: the connection closes after the answer (HTTP/1.0)
            return self._refuse(413, f"the body is over {MAX_MESSAGE_BYTES} bytes")
        if not self.server.slots.acquire(blocking=False):
            self._drain(length)
            return self._refuse(503, "too many exports at once; retry", {"Retry-After": "1"})
        try:
            self._answer(length)
        finally:
            self.server.slots.release()

    def _answer(self, length: int) -> None:
        """Read the body of LENGTH bytes (read even when refusing: unread bytes would reset the answer) and answer it."""
        try:
            body = self._read_body(length)
        except TimeoutError:
            return self._refuse(408, f"the body did not arrive within {BODY_DEADLINE_S:g} s")
        if len(body) < length:
            return self._refuse(400, "the body ended before Content-Length")
        signal = _SIGNALS_BY_PATH.get(urlsplit(self.path).path)
        if signal is None:
            return self._refuse(404, f"no OTLP signal at {urlsplit(self.path).path[:100]}; use /v1/traces, /v1/metrics or /v1/logs")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if content_type != PROTOBUF:
            return self._refuse(415, f"only {PROTOBUF} is accepted")
        if encoding not in ("identity", "gzip"):
            return self._refuse(415, "only gzip or no Content-Encoding is accepted")
        try:
            response = self.server.accept(signal, body, encoding == "gzip")
        except ExportTooLarge as error:
            return self._refuse(413, str(error))
        except InvalidExport as error:
            return self._refuse(400, str(error))
        except StoreFailed as error:
            return self._refuse(500, str(error))
        return self._reply(200, response)

    def _read_body(self, length: int) -> bytes:
        """The LENGTH bytes of the body (fewer when the client closed early); TimeoutError once ``BODY_DEADLINE_S`` has passed."""
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks: list[bytes] = []
        try:
            while length > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(length, _DRAIN_CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                length -= len(chunk)
        finally:
            self.connection.settimeout(self.timeout)
        return b"".join(chunks)

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Answer STATUS with a ``google.rpc.Status`` body saying why (what OTLP/HTTP asks of every failure)."""
        self._reply(status, Status(message=message).SerializeToString(), headers)

    def _wrong_method(self) -> None:
        """Any method but POST: 405 (with ``Allow``) on a signal's path, 404 elsewhere."""
        if urlsplit(self.path).path in _SIGNALS_BY_PATH:
            self._refuse(405, "OTLP/HTTP takes POST only", {"Allow": "POST"})
        else:
            self._refuse(404, "no OTLP signal here")

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _wrong_method  # noqa: N815 (the names the base class dispatches to)

    def _drain(self, length: int) -> None:
        """Read and drop LENGTH bytes of body (at most MAX_MESSAGE_BYTES; in small chunks, so it costs no memory)."""
        while length > 0 and (chunk := self.rfile.read(min(length, _DRAIN_CHUNK))):
            length -= len(chunk)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Send a status with a protobuf body (none for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", PROTOBUF)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Say nothing per request (the base class writes every request to stderr)."""
