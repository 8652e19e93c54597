"""gateway.logging: the shape of each line, and that card numbers and tokens never reach it."""

from __future__ import annotations

import datetime
import io
import json
import logging
from typing import Any

import pytest

from gateway.logging import configure_logging, get_logger, mask_secret

CARD = "6001000000000001"


pytestmark = pytest.mark.usefixtures("restored_logging")


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines_of(stream)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_mode_writes_one_object_per_line_with_ts_level_event_logger() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    log = get_logger("gateway.test")

    log.info("check posted", wsid=12)
    log.warning("central unreachable")

    first, second = json_lines(out)
    assert first["event"] == "check posted"
    assert first["level"] == "info"
    assert first["logger"] == "gateway.test"
    assert first["wsid"] == 12
    assert second["level"] == "warning"
    ts = datetime.datetime.fromisoformat(first["ts"])
    assert ts.utcoffset() == datetime.timedelta(0)


def test_auto_mode_writes_json_when_the_stream_is_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(fmt="auto", stream=out)

    get_logger("gateway.test").info("hello")

    assert json_lines(out)[0]["event"] == "hello"


def test_auto_mode_writes_readable_lines_on_a_terminal() -> None:
    out = _Terminal()
    configure_logging(fmt="auto", stream=out)

    get_logger("gateway.test").info("hello")

    with pytest.raises(json.JSONDecodeError):
        json.loads(lines_of(out)[0])


def test_console_mode_is_not_json() -> None:
    out = io.StringIO()
    configure_logging(fmt="console", stream=out)

    get_logger("gateway.test").info("check posted", wsid=12)

    (line,) = lines_of(out)
    assert "check posted" in line
    assert "wsid=12" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_a_card_number_in_the_message_and_under_token_is_masked() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    get_logger("gateway.test").info(f"IDENT for card {CARD} refused", token=CARD, wsid=3)

    assert CARD not in out.getvalue()
    (event,) = json_lines(out)
    assert event["event"] == "IDENT for card ************0001 refused"
    assert event["token"] == "************0001"
    assert event["wsid"] == 3


@pytest.mark.parametrize(
    "key", ["card", "Card_Number", "identifier", "qr", "password", "access_token"]
)
def test_values_of_secret_keys_are_masked_whatever_their_length(key: str) -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    get_logger("gateway.test").info("scan", **{key: "QR-SECRET-1234"})

    assert json_lines(out)[0][key] == "**********1234"


def test_authorization_header_in_a_nested_value_is_masked() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    get_logger("gateway.test").info("request", headers={"Authorization": "Bearer abcdefgh"})

    assert "abcd" not in out.getvalue()


def test_a_card_number_in_a_stdlib_record_is_masked_and_the_line_has_the_same_shape() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    logging.getLogger("uvicorn.error").warning("bad request for %s", CARD)

    (event,) = json_lines(out)
    assert event["event"] == "bad request for ************0001"
    assert event["logger"] == "uvicorn.error"
    assert event["level"] == "warning"
    assert "ts" in event


def test_a_card_number_in_an_exception_is_masked() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    try:
        raise ValueError(f"no member for {CARD}")
    except ValueError:
        get_logger("gateway.test").exception("lookup failed")

    assert CARD not in out.getvalue()
    assert "************0001" in json_lines(out)[0]["exception"]


def test_short_digit_runs_are_left_alone() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    get_logger("gateway.test").info("check 12345678901 at 2024-07-01", amount="123456789012")

    (event,) = json_lines(out)
    assert event["event"] == "check 12345678901 at 2024-07-01"
    assert event["amount"] == "********9012"


def test_configuring_twice_does_not_duplicate_lines() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    configure_logging(fmt="json", stream=out)

    get_logger("gateway.test").info("once")
    logging.getLogger("httpx").warning("once too")

    assert len(lines_of(out)) == 2


def test_reconfiguring_moves_output_to_the_new_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(fmt="json", stream=first)
    log = get_logger("gateway.test")
    log.info("before")

    configure_logging(fmt="json", stream=second)
    log.info("after")

    assert [e["event"] for e in json_lines(first)] == ["before"]
    assert [e["event"] for e in json_lines(second)] == ["after"]


def test_the_level_filters_structlog_and_stdlib_events() -> None:
    out = io.StringIO()
    configure_logging(level="warning", fmt="json", stream=out)

    get_logger("gateway.test").info("dropped")
    logging.getLogger("aiosqlite").info("dropped too")
    get_logger("gateway.test").warning("kept")

    assert [e["event"] for e in json_lines(out)] == ["kept"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="loud"):
        configure_logging(level="loud", stream=io.StringIO())


@pytest.mark.parametrize(
    ("value", "masked"),
    [(CARD, "************0001"), ("12345", "*2345"), ("1234", "****"), ("", "****")],
)
def test_mask_secret_keeps_only_the_last_four(value: str, masked: str) -> None:
    assert mask_secret(value) == masked
