"""One frame in, one reply frame out: retransmission replay, per-workstation order, dispatch.

Shared by the TCP and serial adapters. The replay cache is per source id, in memory, and outlives
connections: a register that reconnects and retransmits gets its cached reply, and nothing runs
twice (POST's durable idempotency covers restarts of the gateway). A retransmission is the same
request again: the cached reply goes only to an `R` frame whose seq and fields equal the cached
request's, so another request under a reused source id and seq is executed, never answered with
someone else's reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from gateway.domain.reasons import Reason
from gateway.service import Gateway
from pos_adapters.sim.codec import FS, Frame, FrameError, clean_field, encode_frame
from pos_adapters.sim.messages import BadRequest, ParseContext, error_fields, parse_fields

log = structlog.get_logger("pos_adapters.sim")

MAX_SOURCES = 10_000  # bounded memory whatever source ids a misbehaving peer invents
_FS_TEXT = chr(FS)


def _digest(fields: tuple[str, ...]) -> bytes:
    # A digest, not the fields: 10,000 sources times a 32 KiB request would be too much memory.
    text = _FS_TEXT.join(fields).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


@dataclass
class _Source:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
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

    def _source(self, source_id: bytes) -> _Source:
        source = self._sources.get(source_id)
        if source is None:
            source = self._sources[source_id] = _Source()
            if len(self._sources) > MAX_SOURCES:
                oldest, old = next(iter(self._sources.items()))
                if not old.lock.locked():
                    del self._sources[oldest]
        else:
            self._sources.move_to_end(source_id)
        return source

    def _encode(self, frame_sid: bytes, seq: int, fields: list[str]) -> bytes:
        cleaned = [clean_field(f, self.encoding) for f in fields]
        return encode_frame(frame_sid, seq, cleaned, encoding=self.encoding)

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

    async def reply(self, frame: Frame, wanted: Callable[[], bool] | None = None) -> bytes:
        """Answer one frame. Requests of one source id run one at a time, in arrival order.

        `wanted` is asked when the request's turn comes: a request whose connection has gone
        meanwhile is not executed (nothing is cached, so its retransmission runs as new) and
        gets b"". Without it, a peer that sends faster than the store commits and reconnects
        would queue work without end."""
        self.stats.frames += 1
        source = self._source(frame.source_id)
        source.last_seen = time.time()
        source.last_command = frame.fields[0][:16] if frame.fields else ""
        request = _digest(frame.fields)
        async with source.lock:
            if wanted is not None and not wanted():
                self.stats.abandoned += 1
                return b""
            if (
                frame.retransmit
                and source.last_reply
                and source.last_seq == frame.seq
                and source.last_request == request
            ):
                self.stats.replayed += 1
                return source.last_reply
            reply = self._encode(frame.source_id, frame.seq, await self._answer(frame))
            source.last_seq, source.last_request, source.last_reply = frame.seq, request, reply
            return reply

    async def _answer(self, frame: Frame) -> list[str]:
        try:
            command, request = parse_fields(frame.fields, self.context)
        except BadRequest as bad:
            self.stats.errors[bad.reason.value] += 1
            return error_fields(bad.reason, bad.message)
        try:
            answer = await command.run(self.service, request)
        except Exception:  # a bug must cost one reply, never the connection or the daemon
            self.stats.internal_errors += 1
            log.exception("request_failed", command=command.name.value)
            return error_fields(Reason.UNAVAILABLE, "Loyalty unavailable - go on")
        return command.reply(answer)
