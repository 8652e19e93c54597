"""The SIM adapter's two reply styles (docs/protocol.md, "Reply style"): each value a field of its
own (the default, DESIGN section 2), or every value joined by `|` into one field, as the public
ISL scripts read replies (`Split @RxMsg, "|", ...`). Requests are read in both forms in both
styles. The conformance suite (tests/conformance) and the ISL scenarios (tests/test_isl_plugin.py)
run in both styles too; this file holds the unit-level rules, the settings and the doc's dump."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import RunningGateway, member_record
from structlog.testing import capture_logs
from test_isl_plugin import AT, CARD_M1, POS, SCRIPT, ring_lunch

from gateway import __version__, config
from gateway.config import ConfigError, SimSettings, load_settings
from gateway.domain.reasons import Reason
from gateway.service import Gateway
from gateway.store.store import Store
from isl_plugin.islrun import SimLink, Station
from pos_adapters.sim.codec import Frame, FrameDecoder, FrameError, encode_frame
from pos_adapters.sim.session import (
    PIPE,
    ReplyStyle,
    SimResponder,
    pipe_joined,
    source_text,
)
from pos_adapters.sim.tcp import SimTcpServer

ROOT = Path(__file__).resolve().parent.parent
SID = b"   7LOYAL"
CARD = "6001000000000001"  # M1, Ann K., GOLD, 120 points
DATE = "20261123"
IDENT_OK = ["IDENT_OK", "M1", "Ann K.", "GOLD", "120", "POINTS", "Welcome Ann K."]

STYLES: list[ReplyStyle] = ["fields", "pipe"]


def decoded(reply: bytes) -> Frame:
    [frame] = FrameDecoder().feed(reply)
    assert isinstance(frame, Frame)
    return frame


async def ask(
    responder: SimResponder, *fields: str, sid: bytes = SID, seq: int = 1, retransmit: bool = False
) -> tuple[str, ...]:
    """The reply's fields as they came, for a request of these fields."""
    reply = await responder.reply(Frame(sid, seq, retransmit, tuple(fields)))
    return decoded(reply).fields


def values(reply: tuple[str, ...], style: ReplyStyle) -> list[str]:
    """The reply's values, whatever the style: a pipe reply must be one field."""
    if style == "fields":
        return list(reply)
    assert len(reply) == 1
    return reply[0].split(PIPE)


# ---- the pipe field -------------------------------------------------------------------------


def test_values_are_joined_by_pipes_and_empty_ones_keep_their_place() -> None:
    fields = ["COUPON_OK", "C1", "AMOUNT", "101", "5.00", "", "Coupon OK"]
    assert pipe_joined(fields) == ("COUPON_OK|C1|AMOUNT|101|5.00||Coupon OK", 0)
    assert pipe_joined(["COUPON_VOID_OK"]) == ("COUPON_VOID_OK", 0)  # a reply with no values


def test_a_pipe_inside_a_value_becomes_a_slash_and_each_such_value_is_counted() -> None:
    text, replaced = pipe_joined(["IDENT_OK", "M9", "Ann | Bob", "a||b", "", "Welcome Ann | Bob"])
    assert text == "IDENT_OK|M9|Ann / Bob|a//b||Welcome Ann / Bob"
    assert replaced == 3
    assert text.split(PIPE) == ["IDENT_OK", "M9", "Ann / Bob", "a//b", "", "Welcome Ann / Bob"]


def test_the_codec_frames_a_pipe_reply_as_one_field_and_reads_it_back_whole() -> None:
    text, _ = pipe_joined(IDENT_OK)
    raw = encode_frame(SID, 12, [text])
    assert raw.count(b"\x1c") == 1  # only the FS after STX: one field
    assert decoded(raw) == Frame(SID, 12, False, (text,))
    body = raw[1:-5]
    assert raw[-5:-1] == b"%04X" % (sum(body) & 0xFFFF)


def test_source_ids_are_matched_as_the_dashboard_shows_them() -> None:
    assert source_text(b"   7LOYAL") == "7LOYAL"
    assert source_text(b"  12PMS2  ") == "12PMS2"
    assert source_text(b"WS\x80") == "WS\x80"  # every byte one character: any source id matches


# ---- replies in each style ------------------------------------------------------------------


async def test_the_default_style_sends_each_value_as_a_field_of_its_own(service: Gateway) -> None:
    responder = SimResponder(service)
    assert responder.reply_style == "fields"
    assert list(await ask(responder, "IDENT", "7", "1", "0", CARD)) == IDENT_OK


async def test_the_pipe_style_sends_the_reply_as_one_field_named_by_its_first_piece(
    service: Gateway,
) -> None:
    responder = SimResponder(service, reply_style="pipe")
    assert await ask(responder, "IDENT", "7", "1", "0", CARD) == ("|".join(IDENT_OK),)


REQUESTS: list[tuple[str, ...]] = [
    ("PING",),
    ("IDENT", "7", "1", "0", CARD),
    ("IDENT", "7", "1", "0", "0000"),  # IDENT_FAIL
    ("COUPON", "7", "1001", "M1", "WELCOME5", "27.40"),  # the same check: the same ref again
    ("COUPON", "7", "1001", "M1", "NOPE", "27.40"),  # COUPON_FAIL
    ("COUPON_VOID", "7", "1001", "CNOSUCHREF"),  # ERROR UNKNOWN_COUPON
    ("CONSENT", "7", "M5", "LOTTERY", "Y"),
    ("POST", "7", "1", "1001", DATE, "M1", "27.40", "22.40", "2*1001*7.00", ""),  # idempotent
    ("IDENT", "7", "1"),  # ERROR BAD_FIELD
    ("FLY",),  # ERROR UNKNOWN_COMMAND
]


async def test_every_reply_carries_the_same_values_in_both_styles(service: Gateway) -> None:
    fields, pipe = SimResponder(service), SimResponder(service, reply_style="pipe")
    names = set()
    for request in REQUESTS:
        expected = list(await ask(fields, *request))
        got = await ask(pipe, *request)
        assert got == ("|".join(expected),), request
        names.add(expected[0])
    assert names >= {"PONG", "IDENT_OK", "IDENT_FAIL", "COUPON_OK", "COUPON_FAIL", "ERROR"}
    assert names >= {"CONSENT_OK", "POST_OK"}
    assert pipe.stats.pipe_replaced == 0


async def test_a_pipe_in_a_value_is_replaced_and_counted_only_in_the_pipe_style(
    service: Gateway, store: Store
) -> None:
    await store.upsert_members([member_record("M9", display_name="Ann | Bob")])
    fields, pipe = SimResponder(service), SimResponder(service, reply_style="pipe")

    whole = await ask(fields, "IDENT", "7", "1", "0", "CARD-M9")
    cut = values(await ask(pipe, "IDENT", "7", "1", "0", "CARD-M9"), "pipe")

    assert whole[2] == "Ann | Bob" and fields.stats.pipe_replaced == 0
    assert cut[2] == "Ann / Bob" and cut[6] == "Welcome Ann / Bob" and len(cut) == 7
    assert pipe.stats.pipe_replaced == 2


@pytest.mark.parametrize("style", STYLES)
async def test_a_frame_the_codec_refused_is_answered_in_the_style(
    service: Gateway, style: ReplyStyle
) -> None:
    responder = SimResponder(service, reply_style=style)
    error = FrameError(Reason.BAD_CHECKSUM, "checksum 0000, computed 02E3", SID, 4)
    reply = responder.error_reply(error)
    assert reply is not None
    frame = decoded(reply)
    assert frame.seq == 4
    assert values(frame.fields, style) == ["ERROR", "BAD_CHECKSUM", "checksum 0000, computed 02E3"]


@pytest.mark.parametrize("style", STYLES)
async def test_a_retransmission_gets_the_cached_reply_in_the_style(
    service: Gateway, style: ReplyStyle
) -> None:
    responder = SimResponder(service, reply_style=style)
    post = ("POST", "7", "1", "2001", DATE, "M1", "10.00", "10.00", "1*1001*10.00", "")
    first = await ask(responder, *post, seq=5)
    again = await ask(responder, *post, seq=5, retransmit=True)
    assert again == first and values(first, style)[:3] == ["POST_OK", "10", "130"]
    assert responder.stats.replayed == 1
    assert service.stats.requests[("POST", "ok")] == 1


# ---- the override per source id -------------------------------------------------------------


async def test_only_the_sources_matching_a_pattern_are_answered_in_the_pipe_style(
    service: Gateway,
) -> None:
    responder = SimResponder(service, pipe_sources=["7LOYAL", "*PMS2", "  9LOYAL  "])
    ident = ("IDENT", "7", "1", "0", CARD)
    assert len(await ask(responder, *ident, sid=b"   7LOYAL")) == 1
    assert len(await ask(responder, *ident, sid=b"  12PMS2")) == 1
    assert len(await ask(responder, *ident, sid=b"   9LOYAL")) == 1  # the pattern's spaces go
    assert len(await ask(responder, *ident, sid=b"  17LOYAL")) == 7  # not "7LOYAL" exactly
    assert len(await ask(responder, *ident, sid=b"   8LOYAL")) == 7
    assert len(await ask(responder, *ident, sid=b"  12pms2")) == 7  # case counts


async def test_the_style_of_a_source_is_decided_once_not_per_request(
    service: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    responder = SimResponder(service, pipe_sources=["*PMS2"])
    decided: list[bytes] = []
    decide = responder.pipe_replies

    def counted(source_id: bytes) -> bool:
        decided.append(source_id)
        return decide(source_id)

    monkeypatch.setattr(responder, "pipe_replies", counted)
    for seq in range(1, 4):
        await ask(responder, "PING", sid=b"  12PMS2", seq=seq)
        await ask(responder, "PING", sid=SID, seq=seq)
    assert decided == [b"  12PMS2", SID]


def test_an_unknown_style_is_refused(service: Gateway) -> None:
    with pytest.raises(ValueError, match="reply_style"):
        SimResponder(service, reply_style="json")  # type: ignore[arg-type]


# ---- requests: several fields, or one joined by `|`, in both styles ----------------------------


@pytest.mark.parametrize("style", STYLES)
async def test_a_request_joined_by_pipes_runs_like_the_same_fields(
    service: Gateway, style: ReplyStyle
) -> None:
    responder = SimResponder(service, reply_style=style)
    joined = await ask(responder, "IDENT|7|1|0|" + CARD, seq=1)
    separate = await ask(responder, "IDENT", "7", "1", "0", CARD, seq=2)
    assert values(joined, style) == values(separate, style) == IDENT_OK
    assert responder.registers()[0]["last_command"] == "IDENT"
    post = f"POST|7|1|5|{DATE}||1.00|1.00||"  # empty values keep their places
    assert values(await ask(responder, post, seq=3), style)[:2] == ["POST_OK", "0"]


async def test_a_pipe_inside_a_value_of_a_request_of_several_fields_is_never_split(
    service: Gateway,
) -> None:
    responder = SimResponder(service)
    reply = await ask(responder, "IDENT", "7", "1", "0", "6001|0001")
    # The token reached the lookup whole: an unknown card, not a wrong field count.
    assert list(reply[:2]) == ["IDENT_FAIL", "UNKNOWN_MEMBER"]


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        (("PING|",), "BAD_FIELD", "PING takes 0 fields, got 1"),
        (("IDENT|7|1|0",), "BAD_FIELD", "IDENT takes 4 fields, got 3"),
        (("IDENT|7|1|0|6001|0001",), "BAD_FIELD", "IDENT takes 4 fields, got 5"),  # `|` in value
        (("FLY|1|2",), "UNKNOWN_COMMAND", "unknown command 'FLY'"),
        (("IDENT|7|1", "0", CARD), "UNKNOWN_COMMAND", "unknown command 'IDENT|7|1'"),  # mixed
        (("|IDENT",), "UNKNOWN_COMMAND", "unknown command ''"),
    ],
)
async def test_a_joined_request_that_does_not_fit_is_refused_and_runs_nothing(
    service: Gateway, fields: tuple[str, ...], reason: str, message: str
) -> None:
    responder = SimResponder(service)
    reply = await ask(responder, *fields)
    assert list(reply) == ["ERROR", reason, message]
    assert responder.stats.errors[reason] == 1
    assert service.stats.requests.total() == 0


async def test_ping_alone_is_a_command_as_it_stands(service: Gateway) -> None:
    responder = SimResponder(service, reply_style="pipe")
    assert await ask(responder, "PING") == (f"PONG|STANDALONE|{__version__}",)


async def test_a_joined_request_answered_field_by_field_is_logged_once(service: Gateway) -> None:
    responder = SimResponder(service)
    with capture_logs() as logs:
        await ask(responder, "PING|", seq=1)
        await ask(responder, "PING|", seq=2, sid=b"   8LOYAL")
    hints = [log for log in logs if log["event"] == "pipe_request_answered_in_fields"]
    assert len(hints) == 1 and hints[0]["source_id"] == "7LOYAL"
    with capture_logs() as logs:
        await ask(SimResponder(service, reply_style="pipe"), "PING|")
    assert logs == []


# ---- the settings ---------------------------------------------------------------------------


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.upper().startswith("EDGE_GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "gateway.toml")


def test_the_default_is_fields_with_no_override() -> None:
    assert SimSettings().reply_style == "fields"
    assert SimSettings().pipe_reply_sources == []


@pytest.mark.usefixtures("no_environment")
def test_the_style_and_the_patterns_are_read_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        'store_id = "s1"\n[sim]\nreply_style = "pipe"\n'
        'pipe_reply_sources = ["  7LOYAL ", "*PMS2"]\n'
    )
    settings = load_settings(path)
    assert settings.sim.reply_style == "pipe"
    assert settings.sim.pipe_reply_sources == ["7LOYAL", "*PMS2"]

    monkeypatch.setenv("EDGE_GATEWAY_SIM__REPLY_STYLE", "fields")
    monkeypatch.setenv("EDGE_GATEWAY_SIM__PIPE_REPLY_SOURCES", '["12*"]')
    settings = load_settings(path)
    assert (settings.sim.reply_style, settings.sim.pipe_reply_sources) == ("fields", ["12*"])


@pytest.mark.usefixtures("no_environment")
@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('reply_style = "json"', "sim.reply_style:"),
        ('pipe_reply_sources = ["  "]', "sim.pipe_reply_sources[0]:"),
        ('pipe_reply_sources = ["7\\tLOYAL"]', "sim.pipe_reply_sources[0]:"),
        ('pipe_reply_sources = ["Caf\u00e9"]', "sim.pipe_reply_sources[0]:"),
    ],
)
def test_a_bad_style_or_pattern_is_refused_by_its_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'store_id = "s1"\n[sim]\n{toml}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert key in str(refused.value)


def test_the_settings_are_documented_and_in_the_sample() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    sample = (ROOT / "packaging" / "gateway.toml").read_text()
    for key in ("reply_style", "pipe_reply_sources"):
        assert key in SimSettings.model_fields
        assert f"| `sim.{key}` |" in reference
        assert re.search(rf"(?m)^{key} = ", sample)


# ---- docs/protocol.md: the exchange in the pipe style ------------------------------------------


def _doc_pipe_dump() -> bytes:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text.split("\n## Reply style", 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    block = section.split("```\n<- ", 1)[1].split("```", 1)[0]
    return bytes.fromhex(" ".join(block.splitlines()[1:]))


@pytest.fixture
async def pipe_gateway(service: Gateway, store: Store) -> AsyncIterator[RunningGateway]:
    """The real gateway on a real socket, in the pipe style."""
    responder = SimResponder(service, reply_style="pipe")
    server = SimTcpServer(responder, port=0, allow=[ipaddress.ip_network("127.0.0.0/8")])
    await server.start()
    yield RunningGateway(service, store, server, responder)
    await server.stop(grace_s=1.0)


async def test_protocol_doc_shows_the_post_reply_in_the_pipe_style(
    pipe_gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same POST as docs/protocol.md section "One full exchange", answered in the pipe
    style: the dump of section "Reply style", byte for byte."""
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: "5E2A9B7D1F03")
    link = SimLink("127.0.0.1", pipe_gateway.port, source_id=SID)
    station = Station(SCRIPT, link, pos=POS, clock=lambda: AT)
    try:
        ring_lunch(station)
        await station.press(1, [CARD_M1])
        await station.press(2, ["WELCOME5"])
        final = await station.tender(1)
    finally:
        await link.close()
    assert final is not None and final.handlers == ["POST_OK"]
    reply = next(e.raw for e in station.wire if e.kind == "received" and b"POST_OK" in e.raw)
    dump = "\n".join(reply[i : i + 16].hex(" ").upper() for i in range(0, len(reply), 16))
    assert _doc_pipe_dump() == reply, f"the gateway now answers:\n{dump}"
    raw = _doc_pipe_dump()
    assert raw[-5:-1] == b"%04X" % (sum(raw[1:-5]) & 0xFFFF)
