"""Ended spans kept on disk until exported, so a process killed -9 loses none that had ended.

The SDK's batch processor holds ended spans in memory for up to ``OTEL_BSP_SCHEDULE_DELAY``
(5 s) before it exports them; a kill -9 (the OOM killer, a failed node's processes) lost them all.
``SpanSpool`` is a span processor that runs before the batch processor: every sampled span that
ends is encoded (OTLP, ``SpanEncoder``) and written to the process's spool file with one
``pwrite``, which the kernel keeps whatever happens to the process. The batch processor disposes of
spans oldest first (exported, refused, or dropped from its full queue), so one count in the file's
header says which records are done; the file is emptied whenever every record is, and rewritten
once the done ones pass ``COMPACT_BYTES``.

Each live spool file is ``flock``-ed by its process. A process of the same pipeline, role and
export destination that starts later (a restarted worker, a new pool child) takes the lock of any
file whose owner died and exports the records past the count to its own exporter, as the dead
process's spans (their resource is in the records), then deletes the file. A span may be exported
twice when the process died between an export and the count's update; a file a process died while
rewriting is skipped (at most one batch queue of spans). The floor: spans that had not ended.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from hoptrace.pipeline.telemetry.otlp_exporters import EncodedSpans
from hoptrace.pipeline.telemetry.otlp_wire import SpanEncoder

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<Q")
"""The file's header: how many records from the start are done (exported or given up by the batch processor)."""
FRAME = struct.Struct("<I")
"""Each record's length, before it: the record is one serialized ``ExportTraceServiceRequest`` holding one span."""
REWRITING = 2**64 - 1
"""The header while the file is being rewritten: a file left so is skipped."""
COMPACT_BYTES = 4 * 2**20
"""Done records kept in the file before it is rewritten with only the pending ones."""
RECOVER_BATCH = 512
"""Records of a dead process's file sent per export."""
SUFFIX = ".spool"


def spool_folder(root: Path, service_name: str, exporter: SpanExporter) -> Path:
    """The folder under ROOT of the processes of SERVICE_NAME exporting where EXPORTER does: only they recover each other's spans."""
    destination = f"{type(exporter).__name__} {getattr(exporter, '_endpoint', '')}"
    return root / f"{service_name}-{hashlib.sha256(destination.encode()).hexdigest()[:12]}"


class SpanSpool(SpanProcessor):
    """Writes every sampled span that ends to this process's spool file; ``disposed`` marks the oldest records done."""

    def __init__(self, folder: Path, encoder: SpanEncoder | None = None) -> None:
        """Spool into a new file in FOLDER (made if missing), locked by this process until it exits."""
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{time.time_ns()}{SUFFIX}"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.register_at_fork(after_in_child=self._forget_in_child)
        self._encoder = encoder or SpanEncoder()
        self._lock = threading.Lock()
        self._pending: deque[bytes] = deque()
        self._done = 0
        self._done_bytes = 0
        self._end = HEADER.size
        os.pwrite(self._fd, HEADER.pack(0), 0)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing: a span is spooled when it ends."""

    def on_end(self, span: ReadableSpan) -> None:
        """Write SPAN to the file when it is sampled (the batch processor exports only those)."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        record = self._encoder.encode_one(span)
        framed = FRAME.pack(len(record)) + record
        with self._lock:
            if self._fd < 0:
                return
            os.pwrite(self._fd, framed, self._end)
            self._end += len(framed)
            self._pending.append(framed)

    def disposed(self, count: int) -> None:
        """The batch processor is done with its COUNT oldest spans: mark them so in the file."""
        with self._lock:
            if self._fd < 0:
                return
            for _ in range(min(count, len(self._pending))):
                self._done_bytes += len(self._pending.popleft())
                self._done += 1
            if not self._pending or self._done_bytes > COMPACT_BYTES:
                self._rewrite()
            else:
                os.pwrite(self._fd, HEADER.pack(self._done), 0)

    def _rewrite(self) -> None:
        """Keep only the pending records (under the lock)."""
        os.pwrite(self._fd, HEADER.pack(REWRITING), 0)
        pending = b"".join(self._pending)
        os.pwrite(self._fd, pending, HEADER.size)
        self._end = HEADER.size + len(pending)
        os.ftruncate(self._fd, self._end)
        os.pwrite(self._fd, HEADER.pack(0), 0)
        self._done, self._done_bytes = 0, 0

    def shutdown(self) -> None:
        """Nothing: the batch processor's final export comes after, and then ``close`` (through ``SpoolMarking``)."""

    def close(self) -> None:
        """Close and delete the file: the batch processor has exported, or given up on, every span."""
        with self._lock:
            if self._fd < 0:
                return
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing to flush: every record is written when its span ends."""
        return True

    def _forget_in_child(self) -> None:
        """In a forked child: drop the inherited file (and its lock), which stays the parent's."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SpoolMarking(SpanExporter):
    """An exporter that tells the spool, after each export, that the batch's spans are done (exported or refused)."""

    def __init__(self, exporter: SpanExporter, spool: SpanSpool) -> None:
        """Export into EXPORTER, marking in SPOOL."""
        self.exporter = exporter
        self._spool = spool

    def export(self, spans: object) -> SpanExportResult:
        """Export SPANS, then mark them done whatever the result: the batch processor does not try a batch again."""
        try:
            return self.exporter.export(spans)  # type: ignore[arg-type]
        finally:
            self._spool.disposed(len(spans))  # type: ignore[arg-type]

    def shutdown(self) -> None:
        """Shut the wrapped exporter down, and the spool with it (the batch processor calls this after its final export)."""
        self.exporter.shutdown()
        self._spool.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)


def _records(data: bytes) -> Iterator[bytes]:
    """The records of a spool file's DATA past its done count; none when it was left mid-rewrite; a torn last record is left out."""
    (done,) = HEADER.unpack_from(data, 0)
    if done == REWRITING:
        return
    offset, index = HEADER.size, 0
    while offset + FRAME.size <= len(data):
        (size,) = FRAME.unpack_from(data, offset)
        start, offset = offset + FRAME.size, offset + FRAME.size + size
        if offset > len(data):
            return
        if index >= done:
            yield data[start:offset]
        index += 1


def other_files(folder: Path, own: Path) -> list[Path]:
    """The spool files in FOLDER but OWN, by name: other processes', live or dead (a glob, cheap enough to do before starting ``recover``)."""
    return sorted(path for path in folder.glob(f"*{SUFFIX}") if path != own)


def recover(paths: Iterable[Path], exporter: SpanExporter) -> int:
    """Export the spans in the spool files at PATHS whose processes died through EXPORTER; how many were sent.

    EXPORTER must accept ``EncodedSpans`` (``accepts_encoded``): the caller, which spools only for such an exporter, guarantees it.
    A file whose process is alive is left alone; a file whose export failed is kept for the next process to try.
    """
    sent = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # another process recovered it
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive, or another one recovers it now
                continue
            data = path.read_bytes()
            records = list(_records(data)) if len(data) >= HEADER.size else []
            for start in range(0, len(records), RECOVER_BATCH):
                batch = records[start : start + RECOVER_BATCH]
                if exporter.export(EncodedSpans(b"".join(batch), len(batch))) is not SpanExportResult.SUCCESS:  # type: ignore[arg-type]
                    logger.warning("could not export the spans of the dead process's spool %s; the next process tries again", path.name)
                    break
                sent += len(batch)
            else:
                path.unlink(missing_ok=True)
                if records:
                    logger.info("exported %d spans a process that died had ended but not exported (%s)", len(records), path.name)
        finally:
            os.close(fd)
    return sent
