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

Reply style (docs/protocol.md, "Reply style"): by default each value of a reply is a field of
its own (DESIGN section 2). In the `pipe` style, for every source id or for the ones matching
`pipe_sources`, the values are joined by `|` into the one field after the seq, as the public ISL
scripts read replies (`Split @RxMsg, "|", ...`); a `|` inside a value becomes `/` (counted in
`SessionStats.pipe_replaced`). Requests are read in both forms whatever the style: several
fields, or one field joined by `|` (split only when it is not a command as it stands, so no
request that would run otherwise is ever read differently).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

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

ReplyStyle = Literal["fields", "pipe"]
REPLY_STYLES: tuple[str, ...] = get_args(ReplyStyle)
PIPE = "|"  # joins a reply's values in the pipe style
PIPE_STANDIN = "/"  # what a `|` inside a value becomes in the pipe style


def pipe_joined(fields: Sequence[str]) -> tuple[str, int]:
    """A reply's fields as the one field of the pipe style, and how many of them held a `|`
    (each such `|` becomes `/`: the register's `Split` would cut the value there)."""
    text = PIPE.join(fields)
    if text.count(PIPE) == len(fields) - 1:  # the common case: no value holds a `|`
        return text, 0
    replaced = sum(PIPE in f for f in fields)
    return PIPE.join(f.replace(PIPE, PIPE_STANDIN) for f in fields), replaced


def source_text(source_id: bytes) -> str:
    """A source id as store IT sees it (the dashboard, `pipe_sources` patterns): every byte one
    character, the padding spaces removed."""
    return source_id.decode("latin-1").strip()


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
    pipe: bool = False  # its replies in the pipe style, decided once when it is first heard


@dataclass
class SessionStats:
    frames: int = 0
    replayed: int = 0
    abandoned: int = 0  # requests whose connection went away before their turn: not executed
    errors: Counter[str] = field(default_factory=Counter)  # reason -> count of ERROR replies
    internal_errors: int = 0
    pipe_replaced: int = 0  # reply values whose `|` was sent as `/` (pipe style only)


class SimResponder:
    """Turns decoded frames into encoded replies for any SIM transport."""

    def __init__(
        self,
        service: Gateway,
        *,
        encoding: str = "cp1252",
        reply_style: ReplyStyle = "fields",
        pipe_sources: Sequence[str] = (),
    ) -> None:
        if reply_style not in REPLY_STYLES:
            raise ValueError(f"reply_style must be one of {REPLY_STYLES}, not {reply_style!r}")
        self.service = service
        self.encoding = encoding
        self.reply_style = reply_style
        # Source id patterns (fnmatch, case-sensitive, against `source_text`) answered in the
        # pipe style whatever `reply_style` says.
        self.pipe_sources = tuple(pattern.strip() for pattern in pipe_sources)
        self._hinted = False  # a `|`-joined request from a source answered in fields: logged once
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
            source = self._sources[source_id] = _Source(pipe=self.pipe_replies(source_id))
            if len(self._sources) > MAX_SOURCES:
                oldest, old = next(iter(self._sources.items()))
                if not old.busy:
                    del self._sources[oldest]
        else:
            self._sources.move_to_end(source_id)
        return source

    def pipe_replies(self, source_id: bytes) -> bool:
        """Whether this source id's replies go in the pipe style."""
        if self.reply_style == "pipe":
            return True
        if not self.pipe_sources:
            return False
        text = source_text(source_id)
        return any(fnmatchcase(text, pattern) for pattern in self.pipe_sources)

    def _piped(self, fields: list[str]) -> list[str]:
        text, replaced = pipe_joined(fields)
        if replaced:
            self.stats.pipe_replaced += replaced
        return [text]

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
        fields = error_fields(error.reason, error.message)
        if self.pipe_replies(error.source_id):
            fields = self._piped(fields)
        return self._encode(error.source_id, error.seq, fields)

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
            try:
                command, parsed = self._unpiped(source, frame, bad)
            except BadRequest as refused:
                self.stats.errors[refused.reason.value] += 1
                fields = error_fields(refused.reason, refused.message)
                self._answered(source, frame, request, fields, send)
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

    def _unpiped(self, source: _Source, frame: Frame, bad: BadRequest) -> tuple[AnyCommand, Any]:
        """A request sent as one field joined by `|` (the public scripts' `TxMsg gDatos`), read
        as its pieces; raises `bad` for anything else. Off the hot path: such a request first
        fails as an unknown command (no command name holds a `|`), and a request of several
        fields is never split, so a `|` inside one of its values stays as it is."""
        if not (
            bad.reason is Reason.UNKNOWN_COMMAND
            and len(frame.fields) == 1
            and PIPE in frame.fields[0]
        ):
            raise bad
        pieces = frame.fields[0].split(PIPE)
        if source.last_command == frame.fields[0][:16]:  # not yet a later frame's
            source.last_command = pieces[0][:16]
        self._hint(frame, source)
        return parse_fields(pieces, self.context)

    def _hint(self, frame: Frame, source: _Source) -> None:
        if not source.pipe and not self._hinted:
            self._hinted = True
            log.warning(
                "pipe_request_answered_in_fields",
                source_id=source_text(frame.source_id),
                hint="a register that joins its requests with | most likely reads replies with"
                " Split @RxMsg: set sim.reply_style or sim.pipe_reply_sources",
            )

    def _answered(
        self, source: _Source, frame: Frame, request: bytes, fields: list[str], send: Send
    ) -> None:
        try:
            if source.pipe:
                fields = self._piped(fields)
            reply = self._encode(frame.source_id, frame.seq, fields)
        except Exception:  # a reply that cannot be built must not hold its workstation's queue
            fields = self._internal_error(fields[0][:16] if fields else "")
            if source.pipe:
                fields = self._piped(fields)
            reply = self._encode(frame.source_id, frame.seq, fields)
        source.last_seq, source.last_request, source.last_reply = frame.seq, request, reply
        send(reply)

    def _internal_error(self, command: str) -> list[str]:
        self.stats.internal_errors += 1
        log.exception("request_failed", command=command)
        return error_fields(Reason.UNAVAILABLE, "Loyalty unavailable - go on")
