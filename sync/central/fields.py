"""Checks of what arrives on the wire: timestamps, dates, amounts, one JSON object's fields."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

from pydantic import ValidationError

from sync.central.errors import ApiError, Invalid

ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
AMOUNT = re.compile(r"-?\d{1,15}(\.\d{1,4})?", re.ASCII)
QTY = re.compile(r"-?\d{1,9}(\.\d{1,3})?", re.ASCII)
MISSING = object()


def is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return False
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        dt.datetime.fromisoformat(f"{day}T{clock}{(fraction or '')[:7]}{offset}")
    except ValueError:
        return False
    return True


def is_date(value: object) -> bool:
    if not isinstance(value, str):
        return False
    return _is_date_text(value)


@functools.lru_cache(maxsize=4096)
def _is_date_text(value: str) -> bool:
    if _DATE.fullmatch(value) is None:
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def invalid(name: str, value: object, problem: str) -> NoReturn:
    raise Invalid("payload." + name, "missing" if value is MISSING else problem)


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "record"
    return f"{where}: {error['msg']}"


class Fields:
    """Reads one JSON object's fields, raising `Invalid` naming the first that does not fit."""

    __slots__ = ("data", "prefix")

    def __init__(self, data: dict[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    def raw(self, name: str, optional: bool = False) -> Any:
        if name not in self.data:
            if optional:
                return None
            raise Invalid(self.prefix + name, "missing")
        return self.data[name]

    def text(self, name: str, *, nullable: bool = False, optional: bool = False) -> str | None:
        if (nullable or optional) and self.raw(name, optional) is None:
            return None
        return self.required_text(name)

    def required_text(self, name: str) -> str:
        value = self.raw(name, False)
        if not isinstance(value, str) or not value:
            raise Invalid(self.prefix + name, "must be a non-empty string")
        return value

    def integer(self, name: str, *, optional: bool = False) -> int | None:
        if optional and self.raw(name, True) is None:
            return None
        return self.required_int(name)

    def required_int(self, name: str) -> int:
        value = self.raw(name, False)
        if type(value) is not int:
            raise Invalid(self.prefix + name, "must be an integer")
        return value

    def boolean(self, name: str) -> bool:
        value = self.raw(name, False)
        if not isinstance(value, bool):
            raise Invalid(self.prefix + name, "must be true or false")
        return value

    def date(self, name: str) -> str:
        return self._string(name, is_date, "must be a date YYYY-MM-DD")

    def stamp(self, name: str) -> str:
        return self._string(name, is_rfc3339, "must be an RFC 3339 timestamp")

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        problem = "must be one of " + ", ".join(choices)
        return self._string(name, lambda value: value in choices, problem)

    def _string(self, name: str, fits: Callable[[object], bool], problem: str) -> str:
        """A required field that `fits` (a test that only a string passes)."""
        value = self.raw(name, False)
        if not fits(value):
            raise Invalid(self.prefix + name, problem)
        assert isinstance(value, str)
        return value

    def objects(self, name: str) -> list[Fields]:
        value = self.raw(name, False)
        if not isinstance(value, list):
            raise Invalid(self.prefix + name, "must be a list")
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise Invalid(f"{self.prefix}{name}[{index}]", "must be an object")
            out.append(Fields(item, f"{self.prefix}{name}[{index}]."))
        return out

    def obj(self, name: str) -> Fields:
        value = self.raw(name, False)
        if not isinstance(value, dict):
            raise Invalid(self.prefix + name, "must be an object")
        return Fields(value, f"{self.prefix}{name}.")


def check_batch(body: object, max_events: int) -> list[dict[str, Any]]:
    """The structural checks that refuse a whole batch (400 `BAD_BATCH`)."""
    if not isinstance(body, dict):
        raise ApiError(400, "BAD_BATCH", "the body must be a JSON object")
    batch_id = body.get("batch_id")
    if not isinstance(batch_id, str) or not batch_id:
        raise ApiError(400, "BAD_BATCH", "batch_id must be a non-empty string")
    events = body.get("events")
    if not isinstance(events, list):
        raise ApiError(400, "BAD_BATCH", "events must be a list")
    if len(events) > max_events:
        raise ApiError(
            400, "BAD_BATCH", f"{len(events)} events; a batch holds at most {max_events}"
        )
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise ApiError(400, "BAD_BATCH", f"events[{index}] is not an object")
        event_id = event.get("id")
        if not isinstance(event_id, str) or ULID.fullmatch(event_id) is None:
            raise ApiError(400, "BAD_BATCH", f"events[{index}].id is not a ULID")
        if not isinstance(event.get("type"), str):
            raise ApiError(400, "BAD_BATCH", f"events[{index}].type is not a string")
        if not is_rfc3339(event.get("occurred_at")):
            raise ApiError(400, "BAD_BATCH", f"events[{index}].occurred_at is not RFC 3339")
        if not isinstance(event.get("payload"), dict):
            raise ApiError(400, "BAD_BATCH", f"events[{index}].payload is not an object")
    return events
