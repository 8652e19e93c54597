"""One frame in, one reply frame out: retransmission replay, per-workstation order, dispatch.

Shared by the TCP and serial adapters. A frame is answered through a callback (`handle`): at
once, inside the transport's `data_received`, when its command answers from memory (IDENT,
PING, and every malformed or replayed request); from a task only when it waits for a commit
(POST, COUPON, ...). Meanwhile later frames of the same source id wait in a small queue, so
one workstation's requests are answered in order; other workstations go on.

The replay cache is per source id, in memory, and outlives connections: a register that
reconnects and retransmits gets its cached reply, and nothing runs twice (POST's durable
idempotency covers restarts of the gateway). A retransmission is the same request again: the
cached reply goes only to an `R` frame whose seq and fields equal the cached request's, so
another request under a reused source id and seq is executed, never answered with someone
else's reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.domain.reasons import Reason
from gateway.service import Gateway
from pos_adapters.sim.codec import FS, Frame, FrameError, clean_field, encode_frame
from pos_adapters.sim.messages import (
    AnyCommand,
    BadRequest,
    ParseContext,
    error_fields,
    parse_fields,
)

log = structlog.get_logger("pos_adapters.sim")

MAX_SOURCES = 10_000  # bounded memory whatever source ids a misbehaving peer invents
_FS_TEXT = chr(FS)


def _digest(fields: tuple[str, ...]) -> bytes:
    # A digest, not the fields: 10,000 sources times a 32 KiB request would be too much memory.
    text = _FS_TEXT.join(fields).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


Send = Callable[[bytes], None]  # takes the encoded reply; b"": the request was abandoned
Wanted = Callable[[], bool] | None  # asked when a request's turn comes: is its peer still there?


@dataclass
class _Source:
    busy: bool = False  # an answer waits for a commit; later frames wait in `waiting`
    waiting: deque[tuple[Frame, Send, Wanted]] = field(default_factory=deque)
    last_seq: int | None = None
    last_request: bytes = b""  # digest of the cached reply's request: a replay must match it
    last_reply: bytes | None = None
    last_seen: float = 0.0  # wall-clock time of its last frame (for store IT's dashboard)
    last_command: str = ""


@dataclass
class SessionStats:
    frames: int = 0
    replayed: int = 0
    abandoned: int = 0  # requests whose connection went away before their turn: not executed
    errors: Counter[str] = field(default_factory=Counter)  # reason -> count of ERROR replies
    internal_errors: int = 0


class SimResponder:
    """Turns decoded frames into encoded replies for any SIM transport."""

    def __init__(self, service: Gateway, *, encoding: str = "cp1252") -> None:
        self.service = service
        self.encoding = encoding
        self.context = ParseContext(
            decimals=service.options.currency_decimals,
            latest_business_date=service.latest_business_date,
            future_business_date=service.note_future_business_date,
        )
        self._sources: OrderedDict[bytes, _Source] = OrderedDict()
        self.stats = SessionStats()
        self.tasks: set[asyncio.Task[None]] = set()  # answers waiting for a commit

    def _source(self, source_id: bytes) -> _Source:
        source = self._sources.get(source_id)
        if source is None:
            source = self._sources[source_id] = _Source()
            if len(self._sources) > MAX_SOURCES:
                oldest, old = next(iter(self._sources.items()))
                if not old.busy:
                    del self._sources[oldest]
        else:
            self._sources.move_to_end(source_id)
        return source

    def _encode(self, frame_sid: bytes, seq: int, fields: list[str]) -> bytes:
        for text in fields:
            if not (text.isascii() and text.isprintable()):  # rare: clean them all
                fields = [clean_field(f, self.encoding) for f in fields]
                break
        return encode_frame(frame_sid, seq, fields, encoding=self.encoding)

    def registers(self, limit: int = 50) -> list[dict[str, object]]:
        """The registers (source ids) heard from, most recent first: who is alive, and when."""
        heard = sorted(self._sources.items(), key=lambda item: item[1].last_seen, reverse=True)
        return [
            {
                "source_id": sid.decode("latin-1").strip(),
                "last_seen": round(source.last_seen, 3),
                "last_command": source.last_command,
            }
            for sid, source in heard[:limit]
            if source.last_seen
        ]

    def error_reply(self, error: FrameError) -> bytes | None:
        """The `ERROR` reply for a frame the codec refused, when it can be addressed."""
        self.stats.errors[error.reason] += 1
        if error.source_id is None or error.seq is None:
            return None
        return self._encode(error.source_id, error.seq, error_fields(error.reason, error.message))

    def handle(self, frame: Frame, send: Send, wanted: Wanted = None) -> None:
        """Answer one frame through `send`. Requests of one source id run one at a time, in
        arrival order; `send` is called at once when the answer needs no commit.

        `wanted` is asked when the request's turn comes: a request whose connection has gone
        meanwhile is not executed (nothing is cached, so its retransmission runs as new) and
        gets b"". Without it, a peer that sends faster than the store commits and reconnects
        would queue work without end."""
        self.stats.frames += 1
        source = self._source(frame.source_id)
        source.last_seen = time.time()
        source.last_command = frame.fields[0][:16] if frame.fields else ""
        if source.busy:
            source.waiting.append((frame, send, wanted))
            return
        while not self._turn(source, frame, send, wanted) and source.waiting:
            frame, send, wanted = source.waiting.popleft()

    async def reply(self, frame: Frame, wanted: Wanted = None) -> bytes:
        """`handle`, awaited: the encoded reply (b"" for an abandoned request)."""
        answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def send(reply: bytes) -> None:
            if not answered.done():
                answered.set_result(reply)

        self.handle(frame, send, wanted)
        return await answered

    def _turn(self, source: _Source, frame: Frame, send: Send, wanted: Wanted) -> bool:
        """Start answering one frame; True when the answer goes on in a task (which takes the
        next waiting frame when it is done)."""
        if wanted is not None and not wanted():
            self.stats.abandoned += 1
            send(b"")
            return False
        request = _digest(frame.fields)
        if (
            frame.retransmit
            and source.last_reply
            and source.last_seq == frame.seq
            and source.last_request == request
        ):
            self.stats.replayed += 1
            send(source.last_reply)
            return False
        try:
            command, parsed = parse_fields(frame.fields, self.context)
        except BadRequest as bad:
            self.stats.errors[bad.reason.value] += 1
            self._answered(source, frame, request, error_fields(bad.reason, bad.message), send)
            return False
        if command.immediate:
            try:
                fields = command.reply(command.answer_now(self.service, parsed))
            except Exception:  # a bug must cost one reply, never the connection or the daemon
                fields = self._internal_error(command.name.value)
            self._answered(source, frame, request, fields, send)
            return False
        source.busy = True
        task = asyncio.get_running_loop().create_task(
            self._answer_later(source, frame, request, command, parsed, send)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _answer_later(
        self,
        source: _Source,
        frame: Frame,
        request: bytes,
        command: AnyCommand,
        parsed: Any,
        send: Send,
    ) -> None:
        try:
            try:
                fields = command.reply(await command.run(self.service, parsed))
            except Exception:  # a bug must cost one reply, never the connection or the daemon
                fields = self._internal_error(command.name.value)
            self._answered(source, frame, request, fields, send)
        except asyncio.CancelledError:  # stopping: the waiting ones are not executed
            source.busy = False
            send(b"")
            while source.waiting:
                source.waiting.popleft()[1](b"")
            raise
        source.busy = False
        while source.waiting:
            frame, send, wanted = source.waiting.popleft()
            if self._turn(source, frame, send, wanted):
                return

    def _answered(
        self, source: _Source, frame: Frame, request: bytes, fields: list[str], send: Send
    ) -> None:
        reply = self._encode(frame.source_id, frame.seq, fields)
        source.last_seq, source.last_request, source.last_reply = frame.seq, request, reply
        send(reply)

    def _internal_error(self, command: str) -> list[str]:
        self.stats.internal_errors += 1
        log.exception("request_failed", command=command)
        return error_fields(Reason.UNAVAILABLE, "Loyalty unavailable - go on")
