"""Sans-IO framing for the SIM/PMS wire protocol: bytes in, frames and frame errors out.

    SOH <source id> STX FS <seq: 2 digits><flag ' '|'R'><field> FS <field> ... ETX <checksum> EOT

No sockets and no asyncio here: the TCP and serial transports feed whatever bytes they read to a
`FrameDecoder` and write what `encode_frame` returns. Section 5 of docs/protocol.md describes the
layout, the resynchronisation rules and which parts are documented by Oracle and which inferred.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from gateway.domain.reasons import Reason

__all__ = [
    "ACK",
    "DEFAULT_MAX_FRAME",
    "EOT",
    "ETX",
    "FRAME_REASONS",
    "FS",
    "NAK",
    "SOH",
    "STX",
    "DecoderStats",
    "Frame",
    "FrameByte",
    "FrameDecoder",
    "FrameError",
    "FrameReason",
    "StreamStats",
    "checksum",
    "clean_field",
    "encode_frame",
]


class FrameByte(IntEnum):
    """The bytes that frame a message, and a serial line's answers to one; never inside a field."""

    SOH = 0x01  # starts a frame, always: even inside an unfinished one
    STX = 0x02  # ends the source id
    ETX = 0x03  # ends the data
    EOT = 0x04  # ends the frame, right after the checksum
    ACK = 0x06  # serial lines only: a frame arrived intact
    NAK = 0x15  # serial lines only: a frame arrived damaged
    FS = 0x1C  # follows STX, and separates fields

    @property
    def byte(self) -> bytes:
        return bytes((self,))


# The names transports and tests use; IntEnum members, so they are the ints too.
SOH = FrameByte.SOH
STX = FrameByte.STX
ETX = FrameByte.ETX
EOT = FrameByte.EOT
ACK = FrameByte.ACK
NAK = FrameByte.NAK
FS = FrameByte.FS

# The reasons a FrameError carries: the codec's part of the protocol's reason codes.
FrameReason = Literal[
    Reason.BAD_FRAME, Reason.BAD_CHECKSUM, Reason.BAD_FIELD, Reason.FRAME_TOO_LARGE
]
FRAME_REASONS: frozenset[Reason] = frozenset(
    {Reason.BAD_FRAME, Reason.BAD_CHECKSUM, Reason.BAD_FIELD, Reason.FRAME_TOO_LARGE}
)

DEFAULT_MAX_FRAME = 32768

# SOH + 64-byte source id + STX FS + seq + flag: the most bytes needed to read a frame's header.
_HEADER_MAX = 70

_SOH_B = SOH.byte
_STX_B = STX.byte
_ETX_B = ETX.byte
_EOT_B = EOT.byte
_FS_B = FS.byte
_FS_TEXT = chr(FS)  # the code page is ASCII-compatible, so FS is this character in decoded text

_SID = rb"[^\x00-\x1f\x7f]{1,64}"
# The control bytes but FS (0x1C), which the data part holds between its fields.
_CONTROLS_BUT_FS = rb"\x00-\x1b\x1d-\x1f\x7f"
_DATA = rb"[^" + _CONTROLS_BUT_FS + rb"]"
_SOURCE_ID = re.compile(_SID)
_HEADER = re.compile(_SOH_B + rb"(" + _SID + rb")" + _STX_B + _FS_B + rb"([0-9]{2})([ R])")
# The whole well-formed frame in one match, so the common case costs one regex call.
_FRAME = re.compile(
    _HEADER.pattern + rb"(" + _DATA + rb"*)" + _ETX_B + rb"([0-9A-Fa-f]{4})" + _EOT_B
)
# A frame's bytes after SOH up to its checksum: source id, STX FS, seq, flag, data, ETX.
_BODY = b"%b" + _STX_B + _FS_B + b"%02d%b%b" + _ETX_B
_SEQ = re.compile(rb"[0-9]{2}")
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_CONTROL_BUT_FS = re.compile(rb"[" + _CONTROLS_BUT_FS + rb"]")
_CONTROL_TO_SPACE = {c: " " for c in (*range(0x20), 0x7F)}
_ASCII = "".join(map(chr, range(0x80)))


@dataclass(frozen=True, slots=True)
class Frame:
    """One well-formed frame; `fields` are decoded text, the first one names the command."""

    source_id: bytes
    seq: int
    retransmit: bool
    fields: tuple[str, ...]

    def to_bytes(self, encoding: str = "cp1252") -> bytes:
        return encode_frame(
            self.source_id, self.seq, self.fields, retransmit=self.retransmit, encoding=encoding
        )


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that arrived but cannot be executed; answered `ERROR <reason> <message>`."""

    reason: FrameReason
    message: str
    source_id: bytes | None
    seq: int | None

    @property
    def answerable(self) -> bool:
        # A reply is routed by source id and matched by seq; without both the POS cannot use it.
        return self.source_id is not None and self.seq is not None


def checksum(body: bytes) -> bytes:
    """The 16-bit sum of `body` (the bytes after SOH through ETX) as 4 upper-case hex digits."""
    return b"%04X" % (sum(body) & 0xFFFF)


def encode_frame(
    source_id: bytes,
    seq: int,
    fields: Sequence[str],
    *,
    retransmit: bool = False,
    encoding: str = "cp1252",
) -> bytes:
    """Build one frame; raise ValueError for anything the decoder on the other side would reject."""
    if not _SOURCE_ID.fullmatch(source_id):
        raise ValueError("source id must be 1-64 bytes without control bytes")
    if not 0 <= seq <= 99:
        raise ValueError(f"seq {seq} is outside 0..99")
    if isinstance(fields, str):
        # A bare string is a Sequence[str] too, and would be sent one character per field.
        raise TypeError("fields must be a sequence of strings, not a string")
    if not fields:
        # An empty data part decodes as one empty field, so () could not round-trip.
        raise ValueError("a frame carries at least one field")
    try:
        data = _FS_TEXT.join(fields).encode(encoding)
    except UnicodeEncodeError:
        raise ValueError(_field_problem(fields, encoding)) from None
    # One scan of the joined bytes; an FS inside a field shows up as one FS too many.
    if _CONTROL_BUT_FS.search(data) or data.count(_FS_B) != len(fields) - 1:
        raise ValueError(_field_problem(fields, encoding))
    body = _BODY % (source_id, seq, b"R" if retransmit else b" ", data)
    return _SOH_B + body + checksum(body) + _EOT_B


def _field_problem(fields: Sequence[str], encoding: str) -> str:
    # Slow path, only for the error message: find which field encode_frame refused.
    for number, text in enumerate(fields, 1):
        try:
            raw = text.encode(encoding)
        except UnicodeEncodeError:
            return f"field {number} cannot be encoded in {encoding}"
        if _CONTROL.search(raw):
            return f"field {number} contains a control character"
    return "fields cannot be encoded"


def clean_field(text: str, encoding: str = "cp1252") -> str:
    """Make `text` sendable: control characters become spaces, unencodable characters become '?'."""
    if text.isascii() and text.isprintable():  # most fields: nothing to do (every reply uses it)
        return text
    text = text.translate(_CONTROL_TO_SPACE)
    return text.encode(encoding, errors="replace").decode(encoding)


@dataclass(slots=True)
class DecoderStats:
    """Counters for the admin API; dropped bytes are noise on the line, not frames."""

    frames: int = 0
    dropped_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class FrameDecoder:
    """Cut a byte stream into frames; feed it any split of the stream, even one byte at a time."""

    def __init__(self, *, encoding: str = "cp1252", max_frame: int = DEFAULT_MAX_FRAME) -> None:
        # Framing bytes must mean what they mean in ASCII, or nothing below holds (UTF-16, EBCDIC).
        if _ASCII.encode(encoding) != _ASCII.encode("ascii"):
            raise ValueError(f"code page {encoding} is not ASCII-compatible")
        if max_frame < _HEADER_MAX:
            raise ValueError(f"max_frame must be at least {_HEADER_MAX} bytes")
        self._encoding = encoding
        # Looked up once: decoding by name costs more than the decoding itself.
        self._decode = codecs.getdecoder(encoding)
        self._max_frame = max_frame
        self.stats = DecoderStats()
        # An unfinished frame, from its SOH; empty between frames and always below max_frame.
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished frame; 0 between frames, always below max_frame."""
        return len(self._buf)

    def reset(self) -> int:
        """Drop an unfinished frame (its sender stalled, say); return how many bytes it held."""
        dropped = len(self._buf)
        self.stats.dropped_bytes += dropped
        self._buf.clear()
        return dropped

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        stats = self.stats
        buf = self._buf
        pos, end = 0, len(data)
        while pos < end:
            if buf:
                begin = scan = pos  # the frame began in an earlier feed
            else:
                # Between frames, everything up to the next SOH is noise.
                begin = data.find(_SOH_B, pos)
                if begin < 0:
                    stats.dropped_bytes += end - pos
                    break
                stats.dropped_bytes += begin - pos
                scan = begin + 1
            # The frame ends at the first EOT (no control byte is legal inside it), unless a new
            # SOH comes first: then the sender gave up on it and we resynchronise on the new one.
            eot = data.find(_EOT_B, scan)
            stop = end if eot < 0 else eot
            soh = data.find(_SOH_B, scan, stop)
            if soh >= 0:
                stop, eot = soh, -1
            size = len(buf) + stop - begin  # bytes so far, EOT not counted
            too_large = size >= self._max_frame
            if too_large or soh >= 0:
                # Judged on the bytes before EOT, so the outcome is the same however the stream
                # is split: with max_frame bytes and no EOT yet, the frame can only be too large.
                if too_large:
                    head = bytes(buf[:_HEADER_MAX]) + data[begin : begin + _HEADER_MAX]
                    error = _too_large(head, self._max_frame)
                    if error is not None:
                        out.append(error)
                        stats.errors[error.reason] = stats.errors.get(error.reason, 0) + 1
                # The rest of an oversize frame, megabytes maybe, goes as noise up to the next
                # SOH, so it is never held.
                stats.dropped_bytes += size
                buf.clear()
                pos = stop
                continue
            if eot < 0:
                buf += data[begin:end]
                break
            pos = eot + 1
            if buf:
                buf += data[begin:pos]
                frame = bytes(buf)
                buf.clear()
            else:
                frame = data[begin:pos]
            result = _parse(frame, self._decode, self._encoding)
            if isinstance(result, Frame):
                stats.frames += 1
            else:
                stats.errors[result.reason] = stats.errors.get(result.reason, 0) + 1
            out.append(result)
        return out


@dataclass
class StreamStats:
    """What a transport counts of the byte stream it decodes (the TCP server over all its
    connections, one serial line); the admin metrics sum them per adapter."""

    frame_errors: Counter[str] = field(default_factory=Counter)  # reason -> count
    dropped_bytes: int = 0
    partial_timeouts: int = 0  # frames begun but not finished within the read timeout

    def partial_timeout(self, decoder: FrameDecoder) -> None:
        """A frame began but never finished: drop it (the connection or line stays)."""
        self.partial_timeouts += 1
        self.dropped_bytes += decoder.reset()


def _too_large(head: bytes, max_frame: int) -> FrameError | None:
    match = _HEADER.match(head)
    if match is None:
        return None  # nobody to answer: the frame is only counted as dropped bytes
    message = f"frame over {max_frame} bytes"
    return FrameError(Reason.FRAME_TOO_LARGE, message, match[1], int(match[2]))


def _parse(
    frame: bytes, decode: Callable[[bytes], tuple[str, int]], encoding: str
) -> Frame | FrameError:
    """Parse one complete frame, SOH to EOT; the fast path is one regex match."""
    match = _FRAME.fullmatch(frame)
    if match is not None and int(match[5], 16) == sum(frame[1:-5]) & 0xFFFF:
        try:
            text = decode(match[4])[0]
        except UnicodeDecodeError:
            pass  # the slow path names the field
        else:
            # The code page is ASCII-compatible (checked by FrameDecoder), so FS decodes to \x1c.
            return Frame(match[1], int(match[2]), match[3] == b"R", tuple(text.split(_FS_TEXT)))
    return _parse_slowly(frame, encoding)


def _parse_slowly(frame: bytes, encoding: str) -> Frame | FrameError:
    # Step by step, to say what is wrong and to recover source id and seq for the reply.
    # Order: layout (BAD_FRAME), then integrity (BAD_CHECKSUM), then content (BAD_FIELD).
    stx = frame.find(_STX_B)
    if stx < 0:
        return FrameError(Reason.BAD_FRAME, "no STX after the source id", None, None)
    source_id = frame[1:stx]
    if not _SOURCE_ID.fullmatch(source_id):
        return FrameError(Reason.BAD_FRAME, "source id is not 1-64 text bytes", None, None)
    if frame[stx + 1 : stx + 2] != _FS_B:
        return FrameError(Reason.BAD_FRAME, "no FS after STX", source_id, None)
    digits = frame[stx + 2 : stx + 4]
    if not _SEQ.fullmatch(digits):
        return FrameError(Reason.BAD_FRAME, "sequence is not 2 digits", source_id, None)
    seq = int(digits)
    flag = frame[stx + 4 : stx + 5]
    if flag not in (b" ", b"R"):
        return FrameError(Reason.BAD_FRAME, "flag is not space or R", source_id, seq)
    # The last ETX, so that a stray ETX inside a field is reported as a bad field.
    etx = frame.rfind(_ETX_B, stx + 5)
    if etx < 0:
        return FrameError(Reason.BAD_FRAME, "no ETX before EOT", source_id, seq)
    sent = frame[etx + 1 : etx + 5]
    if not _HEX4.fullmatch(sent):
        return FrameError(Reason.BAD_FRAME, "checksum is not 4 hex digits", source_id, seq)
    if etx + 6 != len(frame):
        return FrameError(Reason.BAD_FRAME, "no EOT right after the checksum", source_id, seq)
    computed = checksum(frame[1 : etx + 1])
    if int(sent, 16) != int(computed, 16):
        message = f"checksum {sent.decode()}, computed {computed.decode()}"
        return FrameError(Reason.BAD_CHECKSUM, message, source_id, seq)
    fields: list[str] = []
    for number, raw in enumerate(frame[stx + 5 : etx].split(_FS_B), 1):
        if _CONTROL.search(raw):
            return FrameError(
                Reason.BAD_FIELD, f"field {number} has a control byte", source_id, seq
            )
        try:
            fields.append(raw.decode(encoding))
        except UnicodeDecodeError:
            message = f"field {number} is not valid {encoding}"
            return FrameError(Reason.BAD_FIELD, message, source_id, seq)
    return Frame(source_id, seq, flag == b"R", tuple(fields))
