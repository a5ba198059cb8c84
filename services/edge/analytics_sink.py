"""The edge's no-loss, no-double-count delivery of analytics events (analytics.md §2).

`submit()` only enqueues. A batcher sends up to `batch_size` events (or `flush_interval` seconds
of them) over the client-streaming `Analytics.Ingest`. Whatever cannot be delivered (service
down, batch rejected, queue full) is appended to a JSONL spool segment and fsynced; a replayer
sends the segments back, oldest first, with a 5 s → 60 s doubling backoff, and deletes a segment
only once every line in it was acknowledged. Ingest is idempotent on the event id, so
at-least-once delivery stores each event exactly once.

Events go on the wire as JSON documents (`EventBatch.documents`, checked by the service's own
`documents.normalize`); one whose values do not map 1:1 onto the protobuf fields goes as a
message (`json_format.ParseDict` semantics). Encoding runs in a worker thread, never on the
request path. A service older than `documents` acknowledges fewer events than sent: the batch
counts as undelivered and is spooled, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.analytics import documents
from services.common import tracing
from services.common.grpc_client import open_channel
from services.common.pb import analytics_pb2, analytics_pb2_grpc

log = logging.getLogger(__name__)

SEGMENT_BYTES = 10 * 1024 * 1024
SEGMENT_PREFIX = "events-"
SEGMENT_SUFFIX = ".jsonl"

Event = dict[str, Any]
Wire = bytes | analytics_pb2.AnalyticsEvent
Encoded = tuple[Event, Wire]


class InvalidEvent(ValueError):
    """An event the service would refuse forever; spooling it would only block replay."""


class _NotPlain(TypeError):
    """The fast path met a value it does not map 1:1; `json_format.ParseDict` decides instead."""


def _fill(message: Message, data: Any) -> None:
    """Plain JSON values straight into the message: ~10x cheaper than ParseDict per event.

    Only exact matches are taken (str to string, int to integer, finite float or int to double,
    bool to bool, dict to sub-message, list to repeated scalar); anything else raises
    `_NotPlain`, so the result never differs from what ParseDict would produce.
    """
    if not isinstance(data, dict):
        raise _NotPlain("expected an object")
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        field = fields.get(key)
        if field is None or value is None:  # unknown keys are ignored, null means unset
            continue
        if field.message_type is not None:
            if field.is_repeated:
                raise _NotPlain(key)
            sub = getattr(message, key)
            sub.SetInParent()
            _fill(sub, value)
        elif field.is_repeated:
            if not isinstance(value, list) or not all(_plain(field, v) for v in value):
                raise _NotPlain(key)
            getattr(message, key).extend(value)
        elif _plain(field, value):
            setattr(message, key, value)
        else:
            raise _NotPlain(key)


_PLAIN_TYPES: dict[int, tuple[type, ...]] = {
    FieldDescriptor.TYPE_STRING: (str,),
    FieldDescriptor.TYPE_BOOL: (bool,),
    FieldDescriptor.TYPE_INT64: (int,),
    FieldDescriptor.TYPE_INT32: (int,),
    FieldDescriptor.TYPE_DOUBLE: (int, float),
}


def _plain(field: FieldDescriptor, value: Any) -> bool:
    allowed = _PLAIN_TYPES.get(field.type)
    if allowed is None or not isinstance(value, allowed):
        return False
    if isinstance(value, bool) and field.type != FieldDescriptor.TYPE_BOOL:
        return False  # bool is an int subclass; ParseDict refuses it for numbers
    return not isinstance(value, float) or math.isfinite(value)


def encode(event: Event) -> Wire:
    """The JSON document when every value is plain (a few µs), else the protobuf message."""
    try:
        document = documents.normalize(event)
        wire = orjson.dumps(document)
    except (documents.NotPlain, TypeError):
        return encode_message(event)
    _check_identity(document["id"], document["timestamp"])
    return wire


def _check_identity(event_id: str, timestamp: float) -> None:
    if not event_id:
        raise InvalidEvent("event has no id")
    if not math.isfinite(timestamp) or timestamp <= 0:
        raise InvalidEvent(f"event {event_id}: timestamp must be positive unix seconds")


def encode_message(event: Event) -> analytics_pb2.AnalyticsEvent:
    """The wire message; unknown keys are ignored, wrong types and missing keys refused.

    `json_format.ParseDict(ignore_unknown_fields=True)` is the reference mapping; plain events
    take an equivalent fast path, anything unusual goes through ParseDict itself.
    """
    message = analytics_pb2.AnalyticsEvent()
    try:
        _fill(message, event)
    except (TypeError, ValueError):
        try:
            message = json_format.ParseDict(
                event, analytics_pb2.AnalyticsEvent(), ignore_unknown_fields=True
            )
        except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidEvent(str(exc)) from exc
    _check_identity(message.id, message.timestamp)
    return message


def spool_line(event: Event, wire: Wire | None = None) -> bytes:
    """One JSON line; the protobuf JSON mapping is the fallback for values orjson cannot write."""
    if isinstance(wire, bytes):
        return wire
    try:
        return orjson.dumps(event)
    except TypeError:
        message = wire if wire is not None else encode_message(event)
        return orjson.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))


def _drop(event: Event, exc: Exception) -> None:
    log.error(
        "invalid analytics event dropped",
        extra={"event_id": _event_id(event), "error": str(exc)},
    )


def encode_all(events: Sequence[Event]) -> tuple[list[Encoded], int]:
    """(valid events with their messages, how many were dropped); invalid ones are logged once."""
    encoded: list[Encoded] = []
    for event in events:
        try:
            encoded.append((event, encode(event)))
        except InvalidEvent as exc:
            _drop(event, exc)
    return encoded, len(events) - len(encoded)


def spool_lines(events: Sequence[Event]) -> tuple[list[bytes], int]:
    """Lines for events that were never encoded (queue overflow); (lines, dropped)."""
    lines: list[bytes] = []
    for event in events:
        try:
            lines.append(spool_line(event))
        except (InvalidEvent, TypeError) as exc:
            _drop(event, exc)
    return lines, len(events) - len(lines)


def _segment_ms(path: Path) -> int:
    return int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])


class SpoolDirectory:
    """Append-only `events-<unix_ms>.jsonl` segments; safe to call from worker threads."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._file: Any = None
        self._size = 0
        self._last_ms = 0

    def segments(self) -> list[Path]:
        """Oldest first."""
        found = []
        for path in self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
            with contextlib.suppress(ValueError):
                found.append((_segment_ms(path), path))
        return [path for _, path in sorted(found)]

    def _open_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        newest = max((_segment_ms(p) for p in self.segments()), default=0)
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1, newest + 1)
        path = self.directory / f"{SEGMENT_PREFIX}{self._last_ms}{SEGMENT_SUFFIX}"
        self._file = open(path, "xb")  # kept open across appends, closed by seal()/close()
        self._size = 0
        # The new directory entry must survive a crash too, not only the bytes.
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _close_segment(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, lines: Sequence[bytes]) -> None:
        """Write one batch and fsync it; a failed write closes the segment (no torn middle)."""
        data = b"".join(line + b"\n" for line in lines)
        with self._lock:
            if self._file is None or self._size >= self.segment_bytes:
                self._close_segment()
                self._open_segment()
            try:
                self._file.write(data)
                self._file.flush()
                os.fsync(self._file.fileno())
            except BaseException:
                self._close_segment()
                raise
            self._size += len(data)

    def seal(self) -> list[Path]:
        """Close the open segment (later appends start a new one); every segment, oldest first."""
        with self._lock:
            self._close_segment()
            return self.segments()

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._close_segment()


def read_segment(path: Path) -> tuple[list[Event], int]:
    """The events of one segment and how many lines were skipped.

    A last line without its newline is what a crash mid-write leaves; it is kept only if it is
    still a complete JSON object. Unparseable lines are skipped and counted, never fatal.
    """
    pieces = path.read_bytes().split(b"\n")
    events: list[Event] = []
    skipped = 0
    for piece in pieces:
        if not piece.strip():
            continue
        try:
            value = orjson.loads(piece)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            events.append(value)
        else:
            skipped += 1
    if skipped:
        log.warning("spool lines skipped", extra={"segment": path.name, "skipped": skipped})
    return events, skipped


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class SinkCounters:
    sent: int = 0  # acknowledged by the service (accepted + duplicates)
    accepted: int = 0
    duplicates: int = 0
    spooled_events: int = 0
    replayed_events: int = 0
    dropped_invalid: int = 0
    skipped_spool_lines: int = 0
    send_failures: int = 0
    lost: int = 0  # could be neither sent nor written to disk


class AnalyticsSink:
    """Bounded queue → batches → Ingest; the spool on disk catches everything else."""

    def __init__(
        self,
        addr: str,
        *,
        internal_token: str | None,
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        queue_size: int = 10000,
        replay_initial_delay: float = 5.0,
        replay_max_delay: float = 60.0,
        send_timeout: float = 10.0,
    ) -> None:
        if batch_size <= 0 or queue_size <= 0 or flush_interval <= 0:
            raise ValueError("batch_size, queue_size and flush_interval must be positive")
        self.addr = addr
        self._token = internal_token
        self._spool = SpoolDirectory(Path(spool_dir))
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._replay_initial = replay_initial_delay
        self._replay_max = replay_max_delay
        self._send_timeout = send_timeout
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        # Events the full queue could not take; a task moves them to the spool.
        self._overflow: deque[Event] = deque()
        self._overflow_ready = asyncio.Event()
        self._replay_wanted = asyncio.Event()
        # Taken from the queue but neither acknowledged nor spooled yet (re-handled by close()).
        self._inflight: list[Event] = []
        self._inflight_overflow: list[Event] = []
        self._counters = SinkCounters()
        self._channel: grpc.aio.Channel | None = None
        self._stub: analytics_pb2_grpc.AnalyticsStub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def start(self) -> None:
        self._spool.directory.mkdir(parents=True, exist_ok=True)
        self._channel = open_channel(self.addr, self._token)
        self._stub = analytics_pb2_grpc.AnalyticsStub(self._channel)
        if self._spool.segments():
            self._replay_wanted.set()
        self._tasks = [
            asyncio.create_task(self._batch_loop(), name="analytics-sink-batches"),
            asyncio.create_task(self._overflow_loop(), name="analytics-sink-overflow"),
            asyncio.create_task(self._replay_loop(), name="analytics-sink-replay"),
        ]
        log.info(
            "analytics sink started",
            extra={"addr": self.addr, "spool_dir": str(self._spool.directory)},
        )

    def submit(self, event: Event) -> None:
        """Never blocks, never raises: the request path must not depend on analytics."""
        try:
            if self._closed:
                self._spool_after_close(event)
                return
            try:
                self._queue.put_nowait(event)
            except asyncio.QueueFull:
                self._overflow.append(event)
                self._overflow_ready.set()
        except Exception:
            self._counters.lost += 1
            log.exception("analytics event lost", extra={"event_id": _event_id(event)})

    def _spool_after_close(self, event: Event) -> None:
        """Late events (requests finishing during shutdown) go straight to disk."""
        self._spool.append([spool_line(event)])
        self._spool.close()
        self._counters.spooled_events += 1
        log.warning("event submitted after close: spooled", extra={"event_id": _event_id(event)})

    def stats(self) -> dict[str, int]:
        return {
            "queued": self._queue.qsize()
            + len(self._overflow)
            + len(self._inflight)
            + len(self._inflight_overflow),
            "spool_segments": len(self._spool.segments()),
            **asdict(self._counters),
        }

    # -- delivery --------------------------------------------------------------------------

    async def _encode_all(self, events: Sequence[Event]) -> list[Encoded]:
        encoded, dropped = await asyncio.to_thread(encode_all, events)
        self._counters.dropped_invalid += dropped
        return encoded

    async def _send(self, encoded: Sequence[Encoded]) -> bool:
        if self._stub is None:  # closed without ever starting: everything goes to the spool
            return False
        batch = analytics_pb2.EventBatch()
        for _, wire in encoded:
            if isinstance(wire, bytes):
                batch.documents.append(wire)
            else:
                batch.events.append(wire)
        try:
            with tracing.batch_span("analytics ingest", [_event_id(e) for e, _ in encoded]):
                ack = await self._stub.Ingest(iter([batch]), timeout=self._send_timeout)
        except grpc.aio.AioRpcError as exc:
            self._counters.send_failures += 1
            log.warning(
                "analytics ingest failed",
                extra={"events": len(encoded), "code": exc.code().name, "details": exc.details()},
            )
            return False
        if ack.accepted + ack.duplicates != len(encoded):
            self._counters.send_failures += 1
            log.error(
                "analytics service acknowledged fewer events than sent (older than"
                " EventBatch.documents?); batch spooled",
                extra={"events": len(encoded), "acknowledged": ack.accepted + ack.duplicates},
            )
            return False
        self._counters.accepted += ack.accepted
        self._counters.duplicates += ack.duplicates
        self._counters.sent += ack.accepted + ack.duplicates
        return True

    async def _write_spool(self, lines: list[bytes]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, lines)
        except OSError:
            self._counters.lost += len(lines)
            log.exception("analytics spool write failed", extra={"events": len(lines)})
            return
        self._counters.spooled_events += len(lines)
        self._replay_wanted.set()

    async def _spool_encoded(self, encoded: Sequence[Encoded]) -> None:
        await self._write_spool([spool_line(event, wire) for event, wire in encoded])

    async def _spool_events(self, events: Sequence[Event]) -> None:
        lines, dropped = await asyncio.to_thread(spool_lines, events)
        self._counters.dropped_invalid += dropped
        await self._write_spool(lines)

    async def _deliver(self, events: Sequence[Event]) -> None:
        encoded = await self._encode_all(events)
        if encoded and not await self._send(encoded):
            await self._spool_encoded(encoded)

    async def _collect_batch(self) -> None:
        """Fill `_inflight` with up to `batch_size` events, waiting `flush_interval` after the
        first. Events move straight into `_inflight`, so a cancelled wait (close) loses none."""
        self._inflight.append(await self._queue.get())
        deadline = asyncio.get_running_loop().time() + self._flush_interval
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while len(self._inflight) < self._batch_size:
                    self._inflight.append(await self._queue.get())

    async def _batch_loop(self) -> None:
        while True:
            await self._collect_batch()
            try:
                await self._deliver(self._inflight)
            except Exception:
                log.exception("analytics batch delivery failed; spooling")
                await self._spool_events(self._inflight)
            self._inflight = []

    async def _overflow_loop(self) -> None:
        while True:
            await self._overflow_ready.wait()
            self._overflow_ready.clear()
            while self._overflow:
                self._inflight_overflow = [
                    self._overflow.popleft() for _ in range(len(self._overflow))
                ]
                await self._spool_events(self._inflight_overflow)
                self._inflight_overflow = []

    # -- replay ----------------------------------------------------------------------------

    async def _replay_loop(self) -> None:
        delay = self._replay_initial
        while True:
            await self._replay_wanted.wait()
            await asyncio.sleep(delay)
            self._replay_wanted.clear()
            if await self._replay_segments():
                delay = self._replay_initial
            else:
                delay = min(delay * 2, self._replay_max)
                self._replay_wanted.set()

    async def _replay_segments(self) -> bool:
        """Oldest segment first; stops at the first failure, leaving that segment in place."""
        for path in await asyncio.to_thread(self._spool.seal):
            events, skipped = await asyncio.to_thread(read_segment, path)
            self._counters.skipped_spool_lines += skipped
            for chunk in _chunks(events, self._batch_size):
                encoded = await self._encode_all(chunk)
                if encoded and not await self._send(encoded):
                    return False
            # Counted before the file goes, so "no segment left" implies "counted" to observers.
            self._counters.replayed_events += len(events)
            await asyncio.to_thread(self._spool.remove, path)
            log.info("spool segment replayed", extra={"segment": path.name, "events": len(events)})
        return True

    # -- shutdown --------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within `timeout`, spool the rest; segments stay for next start."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = [*self._inflight, *self._inflight_overflow]
        pending += [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        pending += self._overflow
        self._inflight, self._inflight_overflow = [], []
        self._overflow.clear()
        encoded = await self._encode_all(pending)
        unsent = await self._send_until(encoded, deadline)
        if unsent:
            await self._spool_encoded(unsent)
        self._spool.close()
        if self._channel is not None:
            await self._channel.close()
        log.info("analytics sink closed", extra={"spooled_at_close": len(unsent), **self.stats()})

    async def _send_until(self, encoded: list[Encoded], deadline: float) -> list[Encoded]:
        """Send batches while time remains; returns what was not acknowledged."""
        for index in range(0, len(encoded), self._batch_size):
            remaining = deadline - time.monotonic()
            chunk = encoded[index : index + self._batch_size]
            if remaining <= 0:
                return encoded[index:]
            try:
                async with asyncio.timeout(remaining):
                    ok = await self._send(chunk)
            except TimeoutError:
                ok = False
            if not ok:
                return encoded[index:]
        return []


def _event_id(event: Any) -> Any:
    return event.get("id") if isinstance(event, dict) else None
