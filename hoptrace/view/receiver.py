"""A real OTLP receiver (gRPC and HTTP/protobuf) that keeps what it receives in a telemetry store.

Tests of the whole project point worker processes' exporters at it; ``hoptrace watch`` embeds
it as its trace store. Both transports hand the raw request bytes to one ``_accept`` method,
which decodes them (``pipeline.otlp_decode``), stores the records, and counts what it rejects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import grpc

from hoptrace.view.memory_store import TelemetrySink
from hoptrace.view.otlp_decode import SIGNALS, InvalidExport, OtlpSignal

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest export request accepted on either transport (gRPC's own default is 4 MiB)."""
PROTOBUF = "application/x-protobuf"
_SIGNALS_BY_PATH = {signal.path: signal for signal in SIGNALS}


class OtlpReceiver:
    """OTLP over gRPC and HTTP/protobuf on local ports, storing into ``store``; a context manager.

    Port 0 (the default) means a free ephemeral port: read ``grpc_port``/``http_port`` (or the
    endpoints) after ``start()``. A stopped receiver can be started again, on the same ports.
    """

    def __init__(self, store: TelemetrySink, host: str = "127.0.0.1", grpc_port: int = 0, http_port: int = 0) -> None:
        self.store = store
        self.host = host
        self.grpc_port = grpc_port
        """The gRPC port; once started, the bound one."""
        self.http_port = http_port
        """The HTTP port; once started, the bound one."""
        self._running: tuple[grpc.Server, ThreadPoolExecutor, _OtlpHttpServer] | None = None
        self._rejected = 0
        self._lock = threading.Lock()

    @property
    def rejected(self) -> int:
        """How many export requests were refused because their body did not parse."""
        with self._lock:
            return self._rejected

    @property
    def grpc_endpoint(self) -> str:
        """``http://HOST:PORT`` for a gRPC OTLP exporter."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://HOST:PORT`` for an HTTP OTLP exporter; append ``/v1/traces`` etc. for one signal."""
        return f"http://{self.host}:{self.http_port}"

    def start(self) -> None:
        """Bind both ports and start serving; raises RuntimeError when already running."""
        if self._running is not None:
            raise RuntimeError("the OTLP receiver is already running")
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc")
        server = grpc.server(executor, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        for signal in SIGNALS:
            export: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(partial(self._grpc_export, signal))
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": export}),))
        self.grpc_port = server.add_insecure_port(f"{self.host}:{self.grpc_port}")
        http = _OtlpHttpServer((self.host, self.http_port), self._accept)
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

    def _accept(self, signal: OtlpSignal, body: bytes, gzipped: bool = False) -> bytes:
        """Decode and store one export request body, and return the serialized response.

        Raises InvalidExport (and counts it as rejected) when the body does not parse.
        """
        try:
            records = signal.decode(body, gzipped)
        except InvalidExport:
            with self._lock:
                self._rejected += 1
            raise
        add: dict[str, Callable[[list[Any]], None]] = {
            "traces": self.store.add_spans,
            "metrics": self.store.add_metrics,
            "logs": self.store.add_logs,
        }
        add[signal.name](records)
        return signal.response

    def _grpc_export(self, signal: OtlpSignal, body: bytes, context: grpc.ServicerContext) -> bytes:
        """The Export method of every OTLP gRPC service (gRPC itself undoes gzip compression)."""
        try:
            return self._accept(signal, body)
        except InvalidExport as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            raise  # unreachable: abort() raises; this tells type checkers so


class _OtlpHttpServer(ThreadingHTTPServer):
    """The HTTP server of the receiver: knows where accepted request bodies go."""

    def __init__(self, address: tuple[str, int], accept: Callable[[OtlpSignal, bytes, bool], bytes]) -> None:
        super().__init__(address, _OtlpHttpHandler)
        self.accept = accept


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    """OTLP/HTTP with binary protobuf bodies: POST /v1/traces, /v1/metrics and /v1/logs."""

    server: _OtlpHttpServer
    timeout = 30.0
    """Seconds a silent client may hold a connection."""

    def do_POST(self) -> None:  # noqa: N802 (the name BaseHTTPRequestHandler dispatches to)
        """Answer 200 with the export response, or 411 / 413 / 404 / 415 / 400."""
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._reply(411)
        if int(length) > MAX_MESSAGE_BYTES:
            return self._reply(413)
        body = self.rfile.read(int(length))  # read even when refusing: unread bytes would reset the reply
        signal = _SIGNALS_BY_PATH.get(urlsplit(self.path).path)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if signal is None:
            return self._reply(404)
        if content_type != PROTOBUF or encoding not in ("identity", "gzip"):
            return self._reply(415)
        try:
            response = self.server.accept(signal, body, encoding == "gzip")
        except InvalidExport:
            return self._reply(400)
        return self._reply(200, response)

    def _reply(self, status: int, body: bytes = b"") -> None:
        """Send a status with a protobuf body (empty for errors)."""
        self.send_response(status)
        self.send_header("Content-Type", PROTOBUF)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Say nothing per request (the base class writes every request to stderr)."""
