"""A local TCP proxy to cut a worker off Kafka, and the hook that sends that worker's Kafka connections through it.

Kafka clients connect to the addresses the broker advertises, not to the bootstrap address,
so a proxy in the bootstrap list alone would be bypassed. The worker process instead gets
``sitecustomize`` (on its ``PYTHONPATH``) that maps the broker's address to the proxy's in
``socket.getaddrinfo``, for that process only: an /etc/hosts entry of its own. Stopping the proxy
closes every connection through it and refuses new ones: a partition between that worker
and Kafka, while every other process still reaches the broker.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

REDIRECT_VARIABLE = "HOPTRACE_FAULTS_REDIRECT"

SITECUSTOMIZE = '''
"""Fault suite: resolve the addresses in HOPTRACE_FAULTS_REDIRECT ("host:port=host:port") to others."""
import os
import socket

_redirect = {}
for _pair in filter(None, os.environ.get("HOPTRACE_FAULTS_REDIRECT", "").split(",")):
    _source, _target = _pair.split("=")
    _host, _port = _source.rsplit(":", 1)
    _to_host, _to_port = _target.rsplit(":", 1)
    _redirect[(_host, int(_port))] = (_to_host, int(_to_port))
_getaddrinfo = socket.getaddrinfo


def _redirected(host, port, *args, **kwargs):
    host, port = _redirect.get((host, int(port) if port else port), (host, port))
    return _getaddrinfo(host, port, *args, **kwargs)


if _redirect:
    socket.getaddrinfo = _redirected
'''


def redirect_env(folder: Path, redirects: dict[str, str]) -> dict[str, str]:
    """Environment for a process whose connections to each key ("host:port") go to its value instead (sitecustomize in FOLDER)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(folder), REDIRECT_VARIABLE: ",".join(f"{source}={target}" for source, target in redirects.items())}


class TcpProxy:
    """Forwards connections on 127.0.0.1:PORT to TARGET until stopped; can start again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (on the port of the last start, or a free one) and forward."""
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        """Stop listening and cut every connection."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        """Stop, and end the proxy's thread."""
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, target_writer))
        await asyncio.gather(self._pipe(reader, target_writer), self._pipe(target_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
