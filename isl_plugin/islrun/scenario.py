"""Scenarios: a register's configuration and the steps a cashier takes, in YAML or JSON.

    interface: {timeout_s: 5, source_id: "   7LOYAL", rxmsg_includes_name: false}
    register:  {wsid: 7, rvc: 1, employee: 101}
    pos:
      key_types: {menu_item: 3, discount: 5, tender: 9}
      menu:      {1001: {name: Latte, price: "3.50"},
                  9001: {name: LOYALTY COUPON, price: "0.00", reference: true}}
      discounts: {101: {name: Loyalty amount, kind: amount}}   # no value: open discount
      tenders:   {1: Cash}
    steps:
      - begin: {check: 1001, at: "2026-11-23 12:00"}
      - ring: {item: 1001, qty: 2}
      - press: {key: 1, inputs: ["6001000000000001"]}     # null as an answer: Clear
      - void: {line: 4}                                      # or {object: 101}
      - tender: {object: 1}                                  # amount: all that is due
      - expect: {exit: normal, shown: Welcome, info_lines: [Points], due: "0.00"}
      - cancel: {}                                           # transaction cancel: trans_cncl

docs/isl.md describes every key.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from isl_plugin.islrun.check import Discount, KeyTypes, MenuItem, PosConfig, PosError
from isl_plugin.islrun.errors import ScenarioError
from isl_plugin.islrun.link import SimLink
from isl_plugin.islrun.nodes import Script
from isl_plugin.islrun.station import EventRun, Register, Station, StationOptions

STEP_KINDS = ("begin", "ring", "void", "press", "tender", "cancel", "expect")


@dataclass
class Step:
    number: int
    kind: str
    args: dict[str, Any]


@dataclass
class Scenario:
    name: str
    register: Register = field(default_factory=Register)
    pos: PosConfig = field(default_factory=PosConfig)
    options: StationOptions = field(default_factory=StationOptions)
    source_id: bytes | None = None
    encoding: str = "cp1252"
    steps: list[Step] = field(default_factory=list)

    def source_id_bytes(self) -> bytes:
        # The real layout is not public (reference notes 1.2): workstation number and interface
        # name, space padded, as the project's simulated register sends it.
        return self.source_id or f"{self.register.wsid:>4}LOYAL".encode("ascii")


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where}: a mapping expected")
    return {str(k): v for k, v in value.items()}


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ScenarioError(f"{where}: a whole number expected, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ScenarioError(f"{where}: a whole number expected, got {value!r}") from None


def _money(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ScenarioError(f"{where}: an amount expected, got {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ScenarioError(f"{where}: an amount expected, got {value!r}") from None


def _only(args: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _pos(raw: dict[str, Any]) -> PosConfig:
    _only(raw, {"menu", "discounts", "tenders", "key_types", "decimals"}, "pos")
    menu = {}
    for key, item in _mapping(raw.get("menu"), "pos.menu").items():
        where = f"pos.menu.{key}"
        item = _mapping(item, where)
        _only(item, {"name", "price", "reference", "family_group", "condiment"}, where)
        menu[_int(key, where)] = MenuItem(
            str(item.get("name", f"Item {key}")),
            _money(item.get("price", "0"), f"{where}.price"),
            bool(item.get("reference", False)),
            _int(item.get("family_group", 0), f"{where}.family_group"),
            bool(item.get("condiment", False)),
        )
    discounts = {}
    for key, entry in _mapping(raw.get("discounts"), "pos.discounts").items():
        where = f"pos.discounts.{key}"
        entry = _mapping(entry, where)
        _only(entry, {"name", "kind", "value"}, where)
        kind = entry.get("kind", "amount")
        if kind not in ("amount", "percent", "item"):
            raise ScenarioError(f"{where}.kind: amount, percent or item")
        value = entry.get("value")
        discounts[_int(key, where)] = Discount(
            str(entry.get("name", f"Discount {key}")),
            kind,
            None if value is None else _money(value, f"{where}.value"),
        )
    tenders = {
        _int(k, "pos.tenders"): str(v)
        for k, v in _mapping(raw.get("tenders"), "pos.tenders").items()
    } or {1: "Cash"}
    types = _mapping(raw.get("key_types"), "pos.key_types")
    _only(types, {"menu_item", "discount", "tender"}, "pos.key_types")
    key_types = KeyTypes(**{k: _int(v, f"pos.key_types.{k}") for k, v in types.items()})
    decimals = _int(raw.get("decimals", 2), "pos.decimals")
    return PosConfig(menu, discounts, tenders, key_types, decimals)


def parse_scenario(data: object, name: str = "scenario") -> Scenario:
    raw = _mapping(data, name)
    _only(raw, {"name", "interface", "register", "pos", "steps"}, name)
    interface = _mapping(raw.get("interface"), "interface")
    _only(
        interface,
        {"timeout_s", "source_id", "encoding", "rxmsg_includes_name", "loop_limit"},
        "interface",
    )
    register = _mapping(raw.get("register"), "register")
    _only(register, {"wsid", "rvc", "rvc_name", "employee", "version"}, "register")
    defaults = Register()
    scenario = Scenario(
        name=str(raw.get("name", name)),
        register=Register(
            wsid=_int(register.get("wsid", defaults.wsid), "register.wsid"),
            rvc=_int(register.get("rvc", defaults.rvc), "register.rvc"),
            rvc_name=str(register.get("rvc_name", defaults.rvc_name)),
            employee=_int(register.get("employee", defaults.employee), "register.employee"),
            version=str(register.get("version", defaults.version)),
        ),
        pos=_pos(_mapping(raw.get("pos"), "pos")),
        options=StationOptions(
            timeout_s=float(_money(interface.get("timeout_s", 5), "interface.timeout_s")),
            rxmsg_includes_name=bool(interface.get("rxmsg_includes_name", False)),
            loop_limit=_int(interface.get("loop_limit", 100_000), "interface.loop_limit"),
        ),
        encoding=str(interface.get("encoding", "cp1252")),
    )
    if "source_id" in interface:
        scenario.source_id = str(interface["source_id"]).encode(scenario.encoding)
    steps = raw.get("steps") or []
    if not isinstance(steps, list):
        raise ScenarioError("steps: a list expected")
    for number, step in enumerate(steps, 1):
        scenario.steps.append(_step(number, step))
    return scenario


def _step(number: int, raw: object) -> Step:
    where = f"step {number}"
    if isinstance(raw, str):
        raw = {raw: None}
    entry = _mapping(raw, where)
    if len(entry) != 1:
        raise ScenarioError(f"{where}: one of {', '.join(STEP_KINDS)} per step")
    kind, value = next(iter(entry.items()))
    if kind not in STEP_KINDS:
        raise ScenarioError(f"{where}: unknown step {kind!r} ({', '.join(STEP_KINDS)})")
    where = f"{where} ({kind})"
    # A bare value is the step's main argument: `ring: 1001`, `press: 2`, `tender: 1`.
    main = {"begin": "check", "ring": "item", "void": "line", "press": "key", "tender": "object"}
    args = {main[kind]: value} if kind in main and not isinstance(value, Mapping) else None
    if args is None:
        args = _mapping(value, where)
    allowed = {
        "begin": {"check", "at"},
        "ring": {"item", "qty", "seat"},
        "void": {"line", "object", "type"},
        "press": {"key", "inputs"},
        "tender": {"object", "amount"},
        "cancel": set(),
        "expect": {
            "exit",
            "shown",
            "not_shown",
            "info_lines",
            "total",
            "due",
            "handlers",
            "printed",
            "not_printed",
            "sent",
        },
    }[kind]
    _only(args, allowed, where)
    if kind == "press":
        key = args.get("key")
        if not (isinstance(key, str) and key.isidentifier()):
            _int(key, f"{where}.key")
        inputs = args.get("inputs", [])
        if not isinstance(inputs, list):
            raise ScenarioError(f"{where}.inputs: a list of answers expected")
        args["inputs"] = [None if answer is None else str(answer) for answer in inputs]
    return Step(number, kind, args)


def load_scenario(path: Path) -> Scenario:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ScenarioError(f"{path}: {error}") from None
    return parse_scenario(data, path.stem)


def _when(value: object, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, 12, 0)
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ScenarioError(f"{where}: a date 'YYYY-MM-DD HH:MM' expected") from None


@dataclass
class ScenarioResult:
    station: Station
    problems: list[str] = field(default_factory=list)  # expectations that did not hold

    @property
    def passed(self) -> bool:
        return not self.problems


async def run_steps(station: Station, scenario: Scenario) -> ScenarioResult:
    """Play the steps on `station`; expectations that fail are collected, not raised."""
    result = ScenarioResult(station)
    last: EventRun | None = None
    await station.start()
    for step in scenario.steps:
        where = f"step {step.number} ({step.kind})"
        args = step.args
        station.trace.append(("step", f"{step.number}. {step.kind} {_describe(args)}"))
        try:
            if step.kind == "begin":
                number = _int(args.get("check"), f"{where}.check")
                run = await station.begin(number, _when(args.get("at"), f"{where}.at"))
                last = run or last
            elif step.kind == "ring":
                qty = _int(args.get("qty", 1), f"{where}.qty")
                seat = _int(args.get("seat", 0), f"{where}.seat")
                station.ring(_int(args.get("item"), f"{where}.item"), qty, seat)
            elif step.kind == "void":
                if "line" in args:
                    run = await station.void(_int(args["line"], f"{where}.line"))
                else:
                    kind = str(args.get("type", ""))
                    obj = _int(args.get("object"), f"{where}.object")
                    run = await station.void(None, obj, kind)
                last = run or last
            elif step.kind == "cancel":
                last = await station.cancel() or last
            elif step.kind == "press":
                key = args["key"]
                inquiry = key if isinstance(key, str) and key.isidentifier() else _int(key, where)
                last = await station.press(inquiry, args["inputs"])
            elif step.kind == "tender":
                amount = args.get("amount")
                money = None if amount is None else _money(amount, f"{where}.amount")
                run = await station.tender(_int(args.get("object", 1), f"{where}.object"), money)
                last = run or last
            else:
                for problem in _expect(station, last, args):
                    result.problems.append(f"{where}: {problem}")
                    station.trace.append(("FAILED", problem))
        except PosError as error:
            raise ScenarioError(f"{where}: {error}") from None
    return result


def _describe(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _expect(station: Station, last: EventRun | None, args: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check = station.check
    if "exit" in args:
        got = last.outcome.exit if last else "(no event ran)"
        if got != str(args["exit"]):
            problems.append(f"the last event ended {got}, expected {args['exit']}")
    for text in _as_list(args.get("shown")):
        if last is None or not last.saw(text):
            problems.append(
                f"the cashier did not see {text!r} (saw {last.messages if last else []})"
            )
    for text in _as_list(args.get("not_shown")):
        if last is not None and last.saw(text):
            problems.append(f"the cashier saw {text!r}")
    for text in _as_list(args.get("handlers")):
        if last is None or text.upper() not in (h.upper() for h in last.handlers):
            problems.append(f"event {text} did not run")
    printed = [line for job in (last.printed if last else []) for line in job.lines]
    for text in _as_list(args.get("printed")):
        if not any(text in line for line in printed):
            problems.append(f"no printed line contains {text!r} (printed: {printed})")
    for text in _as_list(args.get("not_printed")):
        if any(text in line for line in printed):
            problems.append(f"a printed line contains {text!r}")
    sent = [" | ".join(fields) for fields in (last.sent if last else [])]
    for text in _as_list(args.get("sent")):
        if not any(text in message for message in sent):
            problems.append(f"no request sent contains {text!r} (sent: {sent})")
    lines = check.info_lines if check else []
    for text in _as_list(args.get("info_lines")):
        if not any(text in line for line in lines):
            problems.append(f"no check info line contains {text!r} (lines: {lines})")
    for key in ("total", "due"):
        if key in args:
            got_amount = getattr(check, key) if check else None
            if got_amount != _money(args[key], key):
                problems.append(f"check {key} is {got_amount}, expected {args[key]}")
    return problems


async def run_scenario(
    script: Script,
    scenario: Scenario,
    host: str,
    port: int,
    *,
    timeout_s: float | None = None,
    clock: Callable[[], dt.datetime] = dt.datetime.now,
) -> ScenarioResult:
    """Run a scenario against the gateway at host:port on a real SIM connection."""
    options = scenario.options
    if timeout_s is not None:
        options = StationOptions(timeout_s, options.rxmsg_includes_name, options.loop_limit)
    link = SimLink(host, port, source_id=scenario.source_id_bytes(), encoding=scenario.encoding)
    station = Station(
        script, link, register=scenario.register, pos=scenario.pos, options=options, clock=clock
    )
    try:
        return await run_steps(station, scenario)
    finally:
        await link.close()
