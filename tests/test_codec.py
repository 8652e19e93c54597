"""The SIM/PMS frame codec: round trips, stream splits, resynchronisation, every frame error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.reasons import Reason
from pos_adapters.sim.codec import (
    ACK,
    DEFAULT_MAX_FRAME,
    EOT,
    ETX,
    FRAME_REASONS,
    FS,
    NAK,
    SOH,
    STX,
    Frame,
    FrameByte,
    FrameDecoder,
    FrameError,
    checksum,
    clean_field,
    encode_frame,
)

# The reasons the codec may give (docs/protocol.md section 5), written out: not read from the code.
REASONS = {Reason.BAD_CHECKSUM, Reason.BAD_FRAME, Reason.BAD_FIELD, Reason.FRAME_TOO_LARGE}

# Bytes a source id may hold, and the characters cp1252 can encode that are not control characters.
TEXT_BYTES = [b for b in range(0x20, 0x100) if b != 0x7F]
CP1252_TEXT = "".join(bytes([b]).decode("cp1252", errors="ignore") for b in TEXT_BYTES)

source_ids = st.lists(st.sampled_from(TEXT_BYTES), min_size=1, max_size=64).map(bytes)
field_texts = st.text(alphabet=CP1252_TEXT, max_size=30)
frames = st.builds(
    Frame,
    source_id=source_ids,
    seq=st.integers(0, 99),
    retransmit=st.booleans(),
    fields=st.lists(field_texts, min_size=1, max_size=20).map(tuple),
)
# Noise rich in the bytes that matter to framing, plus a run long enough to overflow a frame.
noise = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b"\x01", b"\x02\x1c", b"\x03", b"\x04", b"\x1c", b"\x0112\x02\x1c34 ", b"x" * 40000]
        ),
    ),
    max_size=8,
).map(b"".join)


@st.composite
def damaged_frames(draw: st.DrawFn) -> bytes:
    """A good frame with one byte overwritten: exercises every error path."""
    raw = bytearray(draw(frames).to_bytes())
    raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


def build(
    sid: bytes = b"WS12",
    seq: bytes = b"07",
    flag: bytes = b" ",
    data: bytes = b"PING",
    *,
    stx: bytes = STX.byte + FS.byte,
    check: bytes | None = None,
    tail: bytes = EOT.byte,
) -> bytes:
    """Frame bytes with any part replaced; the checksum is right unless given."""
    body = sid + stx + seq + flag + data + ETX.byte
    return SOH.byte + body + (checksum(body) if check is None else check) + tail


def feed_chunks(decoder: FrameDecoder, stream: bytes, size: int) -> list[Frame | FrameError]:
    return [
        item for i in range(0, len(stream), size) for item in decoder.feed(stream[i : i + size])
    ]


# --- encoding, checksum, worked example -------------------------------------------------------


def test_frame_bytes_are_the_documented_ones() -> None:
    # DESIGN.md section 2; the hand-written frames in this file spell them out as literals.
    assert {b.name: b.value for b in FrameByte} == {
        "SOH": 0x01,
        "STX": 0x02,
        "ETX": 0x03,
        "EOT": 0x04,
        "ACK": 0x06,
        "NAK": 0x15,
        "FS": 0x1C,
    }
    assert tuple(FrameByte) == (SOH, STX, ETX, EOT, ACK, NAK, FS)
    assert ACK.byte == b"\x06" and bytes([NAK]) == b"\x15"


def test_frame_reasons_are_the_documented_ones() -> None:
    assert FRAME_REASONS == REASONS


def test_checksum_is_the_byte_sum_as_four_upper_case_hex_digits() -> None:
    assert checksum(b"ABC\x03") == b"%04X" % (65 + 66 + 67 + 3) == b"00C9"
    assert (
        checksum(b"\xfe\xfd\xfc\xfb") == b"03F2"
    )  # 254+253+252+251 = 1010: letters come out upper case


def test_checksum_wraps_at_16_bits() -> None:
    assert checksum(b"\xff" * 300) == b"2AD4"  # 300 * 255 = 0x12AD4


def test_encode_matches_the_worked_example_in_the_docs() -> None:
    # docs/protocol.md section 5: the sum is worked out by hand there (1463 = 0x05B7).
    expected = bytes.fromhex(
        "01 57 53 31 32 02 1c 30 37 20 49 44 45 4e 54 1c 31 32 1c 31 1c 30 1c"
        " 34 30 30 30 31 32 33 03 30 35 42 37 04"
    )
    assert encode_frame(b"WS12", 7, ["IDENT", "12", "1", "0", "4000123"]) == expected


def test_encode_ping_by_hand() -> None:
    # "1" STX FS "07 PING" ETX: 49+2+28+48+55+32+80+73+78+71+3 = 519 = 0x0207.
    assert encode_frame(b"1", 7, ["PING"]) == b"\x011\x02\x1c07 PING\x030207\x04"
    assert encode_frame(b"1", 7, ["PING"], retransmit=True)[4:7] == b"07R"


def test_frame_to_bytes_is_encode_frame() -> None:
    frame = Frame(b"WS12", 99, True, ("POST", "", "Gr\u00fc\u00dfe \u20ac"))
    assert frame.to_bytes() == encode_frame(
        b"WS12", 99, ["POST", "", "Gr\u00fc\u00dfe \u20ac"], retransmit=True
    )
    assert b"Gr\xfc\xdfe \x80" in frame.to_bytes()


@pytest.mark.parametrize(
    ("sid", "seq", "fields"),
    [
        (b"", 1, ["PING"]),
        (b"W" * 65, 1, ["PING"]),
        (b"WS\x0712", 1, ["PING"]),
        (b"WS\x7f", 1, ["PING"]),
        (b"WS12", 100, ["PING"]),
        (b"WS12", -1, ["PING"]),
        (b"WS12", 1, []),
        (b"WS12", 1, ["IDENT", "a\tb"]),
        (b"WS12", 1, ["IDENT", "a\x1cb"]),
        (b"WS12", 1, ["IDENT", "\x7f"]),
        (b"WS12", 1, ["IDENT", "\u4e2d"]),
    ],
    ids=[
        "empty-sid",
        "sid-65",
        "sid-control",
        "sid-del",
        "seq-100",
        "seq-negative",
        "no-fields",
        "tab-in-field",
        "fs-in-field",
        "del-in-field",
        "unencodable",
    ],
)
def test_encode_frame_refuses_what_a_decoder_would_reject(
    sid: bytes, seq: int, fields: list[str]
) -> None:
    with pytest.raises(ValueError):
        encode_frame(sid, seq, fields)


def test_encode_frame_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="field 2 contains a control"):
        encode_frame(b"WS12", 1, ["IDENT", "a\nb"])
    with pytest.raises(ValueError, match="field 3 cannot be encoded in cp1252"):
        encode_frame(b"WS12", 1, ["IDENT", "ok", "\u4e2d"])


def test_encode_frame_refuses_a_bare_string_for_fields() -> None:
    with pytest.raises(TypeError):
        encode_frame(b"WS12", 1, "PING")


def test_clean_field_replaces_control_and_unencodable_characters() -> None:
    assert clean_field("a\tb\x1cc\x7fd\r\n") == "a b c d  "
    assert clean_field("\u4e2d \u20ac5") == "? \u20ac5"
    assert clean_field("\u0436", encoding="cp1251") == "\u0436"
    encode_frame(b"WS12", 1, [clean_field("x\x00\u4e2d\x1c\u20ac")])  # must not raise


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(frames)
def test_decode_of_encode_is_identity(frame: Frame) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(frame.to_bytes()) == [frame]
    assert decoder.stats.frames == 1
    assert decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, min_size=1, max_size=6), st.data())
def test_any_split_of_the_stream_gives_the_same_frames(
    frame_list: list[Frame], data: st.DataObject
) -> None:
    stream = b"".join(frame.to_bytes() for frame in frame_list)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    decoder = FrameDecoder()
    out = [
        item
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)
        for item in decoder.feed(stream[a:b])
    ]
    assert out == frame_list
    assert decoder.stats.dropped_bytes == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(frames.map(Frame.to_bytes), damaged_frames(), noise), max_size=6), st.data()
)
def test_any_split_of_a_dirty_stream_gives_the_same_output_and_counts(
    pieces: list[bytes], data: st.DataObject
) -> None:
    # A small limit so that oversize frames, cut by SOH, EOT or the end of a chunk, are common.
    stream = b"".join(pieces)
    whole = FrameDecoder(max_frame=128)
    expected = whole.feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    split = FrameDecoder(max_frame=128)
    out = [
        item
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)
        for item in split.feed(stream[a:b])
    ]
    assert out == expected
    assert split.stats == whole.stats
    assert split.pending == whole.pending


@settings(max_examples=200, deadline=None)
@given(noise, frames)
def test_garbage_before_a_good_frame_never_loses_it(garbage: bytes, frame: Frame) -> None:
    decoder = FrameDecoder()
    out = decoder.feed(garbage + frame.to_bytes())
    assert out[-1] == frame
    assert all(isinstance(item, Frame | FrameError) for item in out)
    assert {item.reason for item in out if isinstance(item, FrameError)} <= REASONS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), damaged_frames(), noise), max_size=10))
def test_feed_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame=70)
    for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, FrameError):
                assert item.reason in REASONS
                assert len(item.message) <= 60
            else:
                assert isinstance(item, Frame)
        assert decoder.pending < 70


def test_one_byte_at_a_time_decodes_every_frame() -> None:
    first = Frame(b"WS12", 7, False, ("IDENT", "12", "1", "0", "4000123"))
    second = Frame(b"1Rev 1", 8, True, ("PING",))
    stream = first.to_bytes() + second.to_bytes()
    assert feed_chunks(FrameDecoder(), stream, 1) == [first, second]


def test_code_page_is_configurable() -> None:
    frame = Frame(b"WS12", 1, False, ("IDENT", "\u041f\u0440\u0438\u0432\u0435\u0442"))
    assert FrameDecoder(encoding="cp1251").feed(frame.to_bytes("cp1251")) == [frame]
    # The same bytes read as cp1252 are different text: the code page really is used.
    assert FrameDecoder().feed(frame.to_bytes("cp1251")) != [frame]


def test_decoder_refuses_a_code_page_that_is_not_ascii_compatible() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        FrameDecoder(encoding="utf-16")


def test_decoder_refuses_a_limit_below_one_header() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=69)


# --- one table row per frame error --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason", "sid", "seq", "says"),
    [
        (build(check=b"0000"), Reason.BAD_CHECKSUM, b"WS12", 7, "computed 02E3"),
        (build(data=b"IDENT\x1c12\x1c1\x07\x1c0"), Reason.BAD_FIELD, b"WS12", 7, "field 3"),
        (build(data=b"IDENT\x1c1\x032"), Reason.BAD_FIELD, b"WS12", 7, "field 2"),
        (
            build(data=b"IDENT\x1c12\x1c\x81"),
            Reason.BAD_FIELD,
            b"WS12",
            7,
            "field 3 is not valid cp1252",
        ),
        (build(seq=b"4x"), Reason.BAD_FRAME, b"WS12", None, "sequence"),
        (build(seq=b"7"), Reason.BAD_FRAME, b"WS12", None, "sequence"),
        (build(flag=b"X"), Reason.BAD_FRAME, b"WS12", 7, "flag"),
        (build(sid=b"W" * 65), Reason.BAD_FRAME, None, None, "source id"),
        (build(sid=b""), Reason.BAD_FRAME, None, None, "source id"),
        (build(sid=b"WS\x0712"), Reason.BAD_FRAME, None, None, "source id"),
        (build(stx=b""), Reason.BAD_FRAME, None, None, "STX"),
        (build(stx=b"\x02"), Reason.BAD_FRAME, b"WS12", None, "FS"),
        (build(check=b"02G7"), Reason.BAD_FRAME, b"WS12", 7, "4 hex"),
        (build(check=b"207"), Reason.BAD_FRAME, b"WS12", 7, "4 hex"),
        (build(tail=b"!\x04"), Reason.BAD_FRAME, b"WS12", 7, "EOT"),
        (b"\x01WS12\x02\x1c07 PING0207\x04", Reason.BAD_FRAME, b"WS12", 7, "ETX"),
        # Lower-case checksums are accepted on the slow path too: the field is what is wrong.
        (build(data=b"IDENT\x1c\x07", check=b"034c"), Reason.BAD_FIELD, b"WS12", 7, "field 2"),
        # Layout, then checksum, then fields: a damaged frame is not blamed on its content.
        (build(data=b"IDENT\x1c\x07", check=b"0000"), Reason.BAD_CHECKSUM, b"WS12", 7, "checksum"),
    ],
    ids=[
        "bad-checksum",
        "control-byte-in-field",
        "etx-in-field",
        "cp1252-undefined-0x81",
        "seq-not-digits",
        "seq-one-digit",
        "flag-not-space-or-R",
        "sid-over-64",
        "sid-empty",
        "sid-control-byte",
        "no-stx",
        "no-fs-after-stx",
        "checksum-not-hex",
        "checksum-3-digits",
        "junk-before-eot",
        "no-etx",
        "lower-case-checksum-bad-field",
        "checksum-before-fields",
    ],
)
def test_frame_errors(
    raw: bytes, reason: Reason, sid: bytes | None, seq: int | None, says: str
) -> None:
    decoder = FrameDecoder()
    [error] = decoder.feed(raw)
    assert isinstance(error, FrameError)
    assert (error.reason, error.source_id, error.seq) == (reason, sid, seq)
    assert isinstance(error.reason, Reason)  # the protocol's reason codes, not loose strings
    assert error.answerable == (sid is not None and seq is not None)
    assert says in error.message
    # The message goes back in a reply field, so it must be short and sendable as it is.
    assert len(error.message) <= 60
    assert clean_field(error.message) == error.message
    assert decoder.stats.errors == {reason: 1}
    assert decoder.stats.frames == 0


def test_lower_case_checksum_is_accepted() -> None:
    raw = encode_frame(b"WS12", 7, ["IDENT", "12", "1", "0", "4000123"])
    assert raw[-5:-1] == b"05B7"  # has a letter, so lower case is really different
    lower = raw[:-5] + b"05b7\x04"
    assert FrameDecoder().feed(lower) == FrameDecoder().feed(raw) != []
    assert isinstance(FrameDecoder().feed(lower)[0], Frame)


def test_truncated_frame_is_dropped_and_counted_and_the_next_frame_survives() -> None:
    good = Frame(b"WS12", 8, True, ("PING",))
    truncated = Frame(b"WS12", 7, False, ("IDENT", "12")).to_bytes()[:-7]
    decoder = FrameDecoder()
    assert decoder.feed(truncated + good.to_bytes()) == [good]
    assert decoder.stats.dropped_bytes == len(truncated)
    assert decoder.stats.errors == {}


def test_bytes_between_frames_are_dropped_and_counted() -> None:
    first = Frame(b"WS12", 1, False, ("PING",))
    second = Frame(b"WS13", 2, False, ("PING",))
    decoder = FrameDecoder()
    out = decoder.feed(b"\r\n" + first.to_bytes() + b"noise\x04\x03" + second.to_bytes() + b"+")
    assert out == [first, second]
    assert decoder.stats.dropped_bytes == 2 + 7 + 1
    assert decoder.stats.frames == 2


@pytest.mark.parametrize("chunk", [1, 1000, 65536])
def test_oversize_frame_with_readable_header_is_answered_and_the_next_frame_decoded(
    chunk: int,
) -> None:
    big = encode_frame(b"WS12", 5, ["POST", "x" * DEFAULT_MAX_FRAME])
    good = Frame(b"WS12", 6, False, ("PING",))
    decoder = FrameDecoder()
    out = feed_chunks(decoder, big + good.to_bytes(), chunk)
    assert out == [FrameError(Reason.FRAME_TOO_LARGE, "frame over 32768 bytes", b"WS12", 5), good]
    assert isinstance(out[0], FrameError)
    assert out[0].answerable
    assert decoder.stats.dropped_bytes == len(big)
    assert decoder.stats.errors == {Reason.FRAME_TOO_LARGE: 1}


def test_frame_of_exactly_max_frame_bytes_is_accepted() -> None:
    frame = Frame(b"WS12", 5, False, ("POST", "x" * 100))
    raw = frame.to_bytes()
    assert FrameDecoder(max_frame=len(raw)).feed(raw) == [frame]
    [error] = FrameDecoder(max_frame=len(raw) - 1).feed(raw)
    assert isinstance(error, FrameError)
    assert error.reason == Reason.FRAME_TOO_LARGE


def test_oversize_frame_with_unreadable_header_is_only_counted() -> None:
    junk = b"\x01WS\x0712\x02\x1c05 " + b"x" * 200
    good = Frame(b"WS12", 6, False, ("PING",))
    decoder = FrameDecoder(max_frame=128)
    assert decoder.feed(junk + good.to_bytes()) == [good]
    assert decoder.stats.dropped_bytes == len(junk)


def test_endless_frame_keeps_memory_bounded() -> None:
    decoder = FrameDecoder()
    out = decoder.feed(b"\x01WS12\x02\x1c05 POST\x1c")
    chunk = b"x" * 65536
    for _ in range(10 * 1024 * 1024 // len(chunk)):
        out += decoder.feed(chunk)
        assert decoder.pending <= DEFAULT_MAX_FRAME
    assert out == [FrameError(Reason.FRAME_TOO_LARGE, "frame over 32768 bytes", b"WS12", 5)]
    good = Frame(b"WS12", 6, False, ("PING",))
    assert decoder.feed(good.to_bytes()) == [good]
    assert decoder.stats.dropped_bytes == 15 + 10 * 1024 * 1024


def test_new_soh_drops_an_unfinished_frame_even_across_feeds() -> None:
    good = Frame(b"WS12", 6, False, ("PING",))
    decoder = FrameDecoder()
    assert decoder.feed(b"\x01WS12\x02\x1c05 PI") == []
    assert decoder.pending == 12
    assert decoder.feed(b"NG\x1c" + good.to_bytes()) == [good]
    assert decoder.stats.dropped_bytes == 15
    assert decoder.pending == 0


def test_reset_drops_a_stalled_frame_and_counts_it() -> None:
    good = Frame(b"WS12", 6, False, ("PING",))
    decoder = FrameDecoder()
    decoder.feed(b"\x01WS12\x02\x1c05 PI")
    assert decoder.reset() == 12
    assert decoder.pending == 0
    assert decoder.stats.dropped_bytes == 12
    # The tail of the stalled frame is noise now, and the next frame decodes.
    assert decoder.feed(b"NG\x03" + good.to_bytes()) == [good]
    assert decoder.stats.dropped_bytes == 15


def test_answerable_needs_both_source_id_and_seq() -> None:
    assert FrameError(Reason.BAD_FRAME, "m", b"WS12", 7).answerable
    assert not FrameError(Reason.BAD_FRAME, "m", b"WS12", None).answerable
    assert not FrameError(Reason.BAD_FRAME, "m", None, 7).answerable
