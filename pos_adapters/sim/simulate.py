"""`edge-gateway simulate`: a register that speaks the SIM protocol to a running gateway.

A scripted scenario shows one customer's visit (identify, coupon, posted check, a retransmission,
lottery consent); `--registers N --duration S` puts load on the gateway and prints latency
percentiles per command.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from pos_adapters.sim.register import RegisterConnection, Workstation

SAMPLE_CARDS = [f"600100000000000{i}" for i in range(1, 6)]


def _check_number() -> int:
    # Distinct across runs of the simulator on one business day, so posts are new checks.
    return int(time.time() * 1000) % 90_000_000 + random.randint(1, 9_999_999)


def business_date() -> str:
    return dt.date.today().strftime("%Y%m%d")


def birthday_date(month_day: str = "0417") -> str:
    """The last 17 April (Ann's birthday in the sample store) that is not in the future."""
    today = dt.date.today()
    year = today.year if today.strftime("%m%d") >= month_day else today.year - 1
    return f"{year}{month_day}"


async def run_scenario(host: str, port: int, console: Console, *, wsid: int = 7) -> int:
    """One customer at one register; prints each exchange. Returns 0 when all went as expected."""
    connection = await RegisterConnection.open(host, port)
    station = connection.workstation(wsid)
    check = _check_number()
    table = Table(title=f"Register {wsid}, check {check}", show_lines=True)
    table.add_column("register sends")
    table.add_column("gateway answers")
    problems = 0

    async def step(fields: list[str], expect: str, *, retransmit: bool = False) -> list[str]:
        nonlocal problems
        if retransmit:
            reply = await station.retransmit(*fields)
        else:
            reply = await station.request(*fields)
        if reply[0] != expect:
            problems += 1
        sent = ("(R) " if retransmit else "") + " | ".join(fields)
        table.add_row(sent, " | ".join(reply))
        return reply

    try:
        await step(["PING"], "PONG")
        ident = await step(["IDENT", str(wsid), "1", str(check), SAMPLE_CARDS[0]], "IDENT_OK")
        member = ident[1] if ident[0] == "IDENT_OK" else ""
        coupon = await step(
            ["COUPON", str(wsid), str(check), member, "WELCOME5", "27.40"], "COUPON_OK"
        )
        ref = coupon[1] if coupon[0] == "COUPON_OK" else ""
        post = [
            "POST",
            str(wsid),
            "1",
            str(check),
            business_date(),
            member,
            "27.40",
            "22.40",
            "2*1001*7.00;1*1002*13.40;1*1003*7.00",
            ref,
        ]
        await step(post, "POST_OK")
        await step(post, "POST_OK", retransmit=True)
        await step(["IDENT", str(wsid), "1", "0", "no-such-card"], "IDENT_FAIL")
        # A lottery member: points become tickets, the rest stays in the wallet.
        lottery = await step(["IDENT", str(wsid), "1", str(check + 1), SAMPLE_CARDS[1]], "IDENT_OK")
        await step(
            [
                "POST",
                str(wsid),
                "1",
                str(check + 1),
                business_date(),
                lottery[1],
                "80.00",
                "80.00",
                "4*1001*20.00",
                "",
            ],
            "POST_OK",
        )
        # A check re-posted after an outage, from Ann's birthday (17 April): birthday points.
        birthday = birthday_date()
        await step(
            [
                "POST",
                str(wsid),
                "1",
                str(check + 2),
                birthday,
                member,
                "10.00",
                "10.00",
                "1*1002*10.00",
                "",
            ],
            "POST_OK",
        )
        await step(["CONSENT", str(wsid), "M5", "LOTTERY", "Y"], "CONSENT_OK")
        await step(["CONSENT", str(wsid), "M3", "LOTTERY", "Y"], "CONSENT_FAIL")
        await step(["CONSENT", str(wsid), "M5", "LOTTERY", "N"], "CONSENT_OK")
    finally:
        await connection.close()
    console.print(table)
    console.print("[green]scenario ok[/]" if not problems else f"[red]{problems} unexpected[/]")
    return 0 if not problems else 1


@dataclass
class LoadReport:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    replies: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0
    elapsed_s: float = 0.0


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _timed(station: Workstation, fields: list[str], report: LoadReport) -> list[str]:
    started = time.perf_counter()
    try:
        reply = await station.request(*fields)
    except Exception:
        report.errors += 1
        return []
    report.latencies[fields[0]].append(time.perf_counter() - started)
    report.replies[reply[0]] += 1
    return reply


async def _register(host: str, port: int, wsid: int, deadline: float, report: LoadReport) -> None:
    connection = await RegisterConnection.open(host, port)
    station = connection.workstation(wsid)
    date = business_date()
    try:
        while time.perf_counter() < deadline:
            check = _check_number()
            ident = ["IDENT", str(wsid), "1", str(check), random.choice(SAMPLE_CARDS)]
            reply = await _timed(station, ident, report)
            member = reply[1] if reply and reply[0] == "IDENT_OK" else ""
            post = ["POST", str(wsid), "1", str(check), date, member, "12.00", "12.00"]
            await _timed(station, [*post, "1*1001*12.00", ""], report)
    finally:
        await connection.close()


async def run_load(
    host: str, port: int, console: Console, *, registers: int, duration_s: float
) -> LoadReport:
    report = LoadReport()
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(
        *(_register(host, port, 100 + n, deadline, report) for n in range(registers))
    )
    report.elapsed_s = time.perf_counter() - started
    table = Table(title=f"{registers} registers for {report.elapsed_s:.1f} s")
    for column in ("command", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for command, values in sorted(report.latencies.items()):
        table.add_row(
            command,
            str(len(values)),
            f"{len(values) / report.elapsed_s:.0f}",
            *(f"{percentile(values, q) * 1000:.2f}" for q in (0.5, 0.95, 0.99)),
            f"{max(values) * 1000:.2f}",
        )
    console.print(table)
    console.print(f"replies: {dict(report.replies)}; errors: {report.errors}")
    return report
