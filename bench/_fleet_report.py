"""The fleet simulator's figures (bench/fleet.py): what a run's samples mean against DESIGN
section 7 (every event once, the pause's reach), and the report and rows it prints."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as `python bench/fleet.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench._fleet_stores import Options

if TYPE_CHECKING:
    from bench.fleet import IngestSampler, Timeline

PAUSE_TARGET_S = 2.0  # DESIGN.md section 7: central's pause seen by every store within 2 s (p99)


# The registers' timers waking this late (p99) means the worker processes had no CPU to spare:
# every figure then measures the machine running the simulated stores, not central.
SATURATED_LAG_S = 0.1


# The rules documents published during the load: the lottery paused in steady load (the target),
# resumed after central A's SIGKILL, paused again after PostgreSQL's restart.
VERSIONS = ("fleet-pause", "fleet-resume-after-kill", "fleet-pause-after-pg-restart")


def cores(used: dict[str, float], key: str) -> float:
    return used[key] / used["seconds"] if used.get("seconds") else float("nan")


def stamp_seconds(text: str) -> float:
    """Central's RFC 3339 stamp as a POSIX time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def spread(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p99, max of durations in seconds (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "count": len(ordered),
        "p50": common.percentile(ordered, 0.5),
        "p99": common.percentile(ordered, 0.99),
        "max": ordered[-1],
    }


def analyse(
    options: Options,
    stores: list[dict[str, Any]],
    lags: list[tuple[float, float]],
    central: dict[str, Any],
    depth: list[dict[str, int]],
    timeline: Timeline,
    admin_answer_s: dict[str, float],
) -> dict[str, Any]:
    marks = timeline.marks
    # -- exactly once --
    made: dict[str, tuple[str, str]] = {}  # event id -> (store, type)
    doubled_at_stores = 0
    for s in stores:
        for event_id, kind in s["ids"]:
            if event_id.upper() in made:
                doubled_at_stores += 1
            made[event_id.upper()] = (s["store_id"], kind)
    at_central: Counter[str] = Counter()
    wrong_store = not_accepted = 0
    for event_id, store_id, _kind, status in central["events"]:
        at_central[event_id] += 1
        mine = made.get(event_id)
        if mine is not None and mine[0] != store_id:
            wrong_store += 1
        if status != "accepted":
            not_accepted += 1
    missing = [e for e in made if e not in at_central]
    extra = [e for e in at_central if e not in made]
    checks_by_store: Counter[str] = Counter(row[0] for row in central["checks"])
    multi_event_checks = sum(1 for row in central["checks"] if int(row[4]) != 1)
    count_mismatch = sum(
        1
        for s in stores
        if checks_by_store[s["store_id"]] != s["posted_checks"] + s["burst"]
        or s["posted_checks"] != len(s["post_ok"])
    )
    refused = sum(sum(s["refused"].values()) for s in stores)
    once = {
        "store_event_ids": len(made),
        "central_events": len(central["events"]),
        "missing_at_central": len(missing),
        "extra_at_central": len(extra),
        "not_accepted": not_accepted,
        "wrong_store": wrong_store,
        "ids_twice_at_stores": doubled_at_stores,
        "check_keys_with_more_than_one_event": multi_event_checks,
        "stores_whose_check_counts_differ": count_mismatch,
        "posted_checks": sum(s["posted_checks"] for s in stores),
        "burst_events": sum(s["burst"] for s in stores),
        "refused_posts": refused,
        "left_in_outboxes": sum(d["waiting"] for d in depth),
        "dead_letters": sum(d["dead_letters"] for d in depth),
        "examples_missing": missing[:5],
        "examples_extra": extra[:5],
    }
    once["met"] = (
        len(made) > 0
        and not missing
        and not extra
        and not (not_accepted or wrong_store or doubled_at_stores or multi_event_checks)
        and not count_mismatch
        and not once["left_in_outboxes"]
        and not once["dead_letters"]
    )

    # -- delivery: POST_OK -> central's stamp on the check --
    applied = {(r[0], int(r[1]), int(r[2])): stamp_seconds(r[3]) for r in central["checks"]}
    # Faults, and the rules documents' publication (500 stores waking at once on 2 vCPUs),
    # with the 10 s after each.
    windows = [
        (marks["central_A_kill"], marks["central_A_ready"] + 10.0),
        (marks["postgres_stop"], marks["postgres_ready"] + 10.0),
        *((marks[f"{v}_sent"], marks[f"{v}_sent"] + 10.0) for v in VERSIONS),
    ]
    steady_lags = [
        lag for at, lag in lags if marks["steady_start"] <= at < marks[f"{VERSIONS[0]}_sent"]
    ]
    every, calm = [], []
    for s in stores:
        for wsid, check, ok_at in s["post_ok"]:
            at = applied.get((s["store_id"], wsid, check))
            if at is None:
                continue
            every.append(at - ok_at)
            if not any(a <= ok_at <= b for a, b in windows):
                calm.append(at - ok_at)
    post_s = [v for s in stores for v in s["post_s"]]

    # -- the rules documents: reach per store. A store that missed one (central's rules are one
    # record: a later document replaces it before a late store asks) saw it with the next one.
    def reach(k: int) -> dict[str, Any]:
        sent = marks[f"{VERSIONS[k]}_sent"]
        figures: dict[str, Any] = {"version": VERSIONS[k]}
        for name, chosen in (("all", stores), ("A", None), ("B", None)):
            group = chosen if chosen is not None else [s for s in stores if s["central"] == name]
            times = []
            for s in group:
                seen = [s["rules_seen"][v] for v in VERSIONS[k:] if v in s["rules_seen"]]
                if seen:
                    times.append(min(seen) - sent)
            part: dict[str, Any] = spread(times)
            part["stores"] = len(group)
            part["not_seen"] = len(group) - len(times)
            part["over_target"] = sum(1 for t in times if t > PAUSE_TARGET_S)
            part["over_10s"] = sum(1 for t in times if t > 10.0)
            figures[name] = part
        figures["admin_answer_s"] = admin_answer_s[VERSIONS[k]]
        return figures

    pause = reach(0)
    pause["met"] = pause["all"]["not_seen"] == 0 and pause["all"]["p99"] <= PAUSE_TARGET_S
    last_rules = Counter(str(s["active_rules"]) for s in stores)

    calls: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for s in stores:
        calls.update(s["calls"])
        failures.update(s["failures"])
    # Failed requests by when they failed: before the load, around each fault (to 15 s after
    # it), or elsewhere.
    phases = {
        "before the load (start, bootstrap)": (0.0, marks["load_start"]),
        "central A killed": (marks["central_A_kill"], marks["central_A_ready"] + 15.0),
        "PostgreSQL restarted": (marks["postgres_stop"], marks["postgres_ready"] + 15.0),
    }
    failed_when: dict[str, Counter[str]] = {name: Counter() for name in [*phases, "elsewhere"]}
    for s in stores:
        for at, what in s["failed_at"]:
            phase = next((n for n, (a, b) in phases.items() if a <= at <= b), "elsewhere")
            failed_when[phase][what] += 1
    return {
        "exactly_once": once,
        "delivery": {"all": spread(every), "outside_faults": spread(calm), "matched": len(every)},
        "post_check": spread(post_s),
        "register_timer_lag": spread([lag for _, lag in lags]),
        "register_timer_lag_steady": spread(steady_lags),
        "saturated": bool(steady_lags) and spread(steady_lags)["p99"] > SATURATED_LAG_S,
        "pause": pause,
        "after_central_kill": reach(1),
        "after_postgres_restart": reach(2),
        "active_rules_at_end": dict(last_rules),
        "requests": {
            "calls": dict(calls),
            "failures": dict(failures),
            "failures_by_phase": {k: dict(v) for k, v in failed_when.items()},
        },
        "outages_seen_by_stores": sum(s["outages"] for s in stores),
        "forwarder_failures": sum(s["forwarder"]["failures"] for s in stores),
        "refresh_failures": sum(s["refresh_failures"] for s in stores),
    }


def bootstrap_figures(
    stores: list[dict[str, Any]], started: float, setup: dict[str, Any]
) -> dict[str, Any]:
    done = [s for s in stores if s["bootstrapped_at"] is not None]
    own = [
        s["bootstrapped_at"] - s["started_at"] - (s["jitter_s"] or 0.0)
        for s in done
        if s["started_at"] is not None
    ]
    last = max((s["bootstrapped_at"] for s in done), default=math.nan)
    return {
        "stores": len(stores),
        "bootstrapped": len(done),
        "from_snapshot_file": sum(1 for s in stores if s["snapshots_applied"]),
        "paged_instead": sum(1 for s in stores if s["snapshot_missing"]),
        "resumed_downloads": sum(s["snapshot_resumed"] for s in stores),
        "bytes": sum(s["snapshot_bytes"] for s in stores),
        "fleet_s": last - started,
        "per_store_s": spread(own),
        "members_cached_min": min((s["members_cached"] for s in stores), default=0),
        "paged_bytes_per_store": setup["paged"]["bytes"],
        "snapshot_bytes_per_store": setup["snapshot"]["size"],
    }


def rate_figures(
    used: dict[str, float], sampler: IngestSampler, start: float, end: float
) -> dict[str, Any]:
    events = sampler.count_at(end) - sampler.count_at(start)
    seconds = used["seconds"]
    per_event = {k: used[k] / events * 1e6 if events else math.nan for k in used if k != "seconds"}
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds else math.nan,
        "cpu_us_per_event": per_event,
        "cores": {k: cores(used, k) for k in used if k != "seconds"},
    }


def log_counts(root: Path) -> dict[str, int]:
    """How often each warning or error was logged by the stores (their workers' log files)."""
    counts: Counter[str] = Counter()
    for log in root.glob("worker-*.log*"):
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    why = str(event.get("error") or event.get("reason") or "")[:60]
                    counts[f"{event.get('level')}:{event.get('event')} {why}".strip()] += 1
    return dict(counts.most_common(20))


def report(result: dict[str, Any]) -> None:
    o = result["options"]
    boot = result["bootstrap"]
    print()
    print(f"bootstrap ({boot['stores']} stores, jitter 0..{o['jitter_s']:g} s):")
    print(
        f"  {boot['bootstrapped']} bootstrapped ({boot['from_snapshot_file']} from the snapshot"
        f" file, {boot['paged_instead']} paged), in {boot['fleet_s']:.1f} s for the fleet;"
        f" per store (without its jitter) p50 {boot['per_store_s']['p50']:.2f} s,"
        f" p99 {boot['per_store_s']['p99']:.2f} s"
    )
    print(
        f"  bytes: {boot['bytes']:,} in all = {boot['snapshot_bytes_per_store']:,} per store"
        f" (snapshot file); paging changes instead: {boot['paged_bytes_per_store']:,} per store,"
        f" {boot['paged_bytes_per_store'] * boot['stores']:,} for the fleet"
    )
    bc = result["bootstrap_cpu"]
    print(
        f"  CPU: workers {bc['workers']:.1f} s ({bc['workers'] / max(1, boot['stores']):.2f} s"
        f" per store), central {bc['central']:.1f} s, PostgreSQL {bc['postgres']:.1f} s"
    )
    print("\ningest (central A + B on one PostgreSQL):")
    rows = []
    for name, figures in (
        ("steady load", result["steady"]),
        ("whole load, faults", result["load"]),
    ):
        per = figures["cpu_us_per_event"]
        rows.append(
            [
                name,
                f"{figures['events']:,}",
                f"{figures['events_per_s']:,.1f}/s",
                common.us(per["central"]),
                common.us(per["postgres"]),
                common.us(per["workers"]),
                f"{figures['cores']['others']:.2f}",
            ]
        )
    burst = result["burst"]
    if burst:
        used = burst["cpu"]
        n = burst["events"]
        rows.append(
            [
                "burst (outboxes full)",
                f"{n:,}",
                f"{burst['rate']:,.0f}/s (peak {burst['peak_rate_1s']:,.0f})",
                common.us(used["central"] / n * 1e6),
                common.us(used["postgres"] / n * 1e6),
                common.us(used["workers"] / n * 1e6),
                f"{cores(used, 'others'):.2f}",
            ]
        )
    common.print_table(
        "",
        ["", "events", "rate", "central CPU/event", "PostgreSQL", "stores", "others (cores)"],
        rows,
    )
    conn = result["connections"]
    print(
        "  in steady load: "
        + ", ".join(
            f"central {k}: {conn[k]['connections']} store connections,"
            f" {conn[k]['long_polls_waiting']} long polls waiting"
            for k in ("A", "B")
        )
        + f"; PostgreSQL client connections: {conn.get('postgres_client_connections')}"
        " (central's, this benchmark's two included)"
    )
    req = result["requests"]
    print(f"  requests from the stores: {req['calls']}")
    for phase, failed in req["failures_by_phase"].items():
        print(f"  failed, {phase}: {failed or 'none'}")
    d = result["delivery"]
    print("\ndelivery, POST_OK -> central's stamp on the check:")
    calm = "outside faults and publications"
    for key, label in (("all", "every check"), ("outside_faults", calm)):
        f = d[key]
        print(
            f"  {label}: {f['count']:,} checks, p50 {f['p50'] * 1000:,.0f} ms,"
            f" p99 {f['p99'] * 1000:,.0f} ms, max {f['max'] * 1000:,.0f} ms"
        )
    ps, lag = result["post_check"], result["register_timer_lag"]
    steady_lag = result["register_timer_lag_steady"]
    print(
        f"  post_check at the store (due -> POST_OK): p50 {ps['p50'] * 1000:.1f} ms,"
        f" p99 {ps['p99'] * 1000:.1f} ms; register timers late p99 {lag['p99'] * 1000:.1f} ms"
        f" ({steady_lag['p99'] * 1000:.1f} ms in steady load)"
    )
    if result["saturated"]:
        print(
            f"  SIMULATOR SATURATED: the stores' event loops ran late in steady load (p99 over"
            f" {SATURATED_LAG_S * 1000:.0f} ms): latencies and reach times measure this machine's"
            " CPU, shared by every simulated store, not central; lower --rate"
        )
    steady = result["steady"]["cores"]
    print(
        f"  cores busy in steady load: central {steady['central']:.2f}, PostgreSQL"
        f" {steady['postgres']:.2f}, the stores {steady['workers']:.2f}, other processes"
        f" {steady['others']:.2f}"
    )
    print("\nfaults (seconds after the load started):")
    t = result["timeline"]
    print(
        f"  central A SIGKILL at {t['central_A_kill']:.1f}, back at {t['central_A_ready']:.1f};"
        f" PostgreSQL stopped at {t['postgres_stop']:.1f}, back at {t['postgres_ready']:.1f}"
    )
    print(f"  stores' log: {result['logs']}")
    print("\nrules documents (the lottery paused or resumed), reach per store (seen by A's / B's):")
    for key in ("pause", "after_central_kill", "after_postgres_restart"):
        p = result[key]
        a, b, every = p["A"], p["B"], p["all"]
        print(
            f"  {p['version']}: p50 {every['p50'] * 1000:,.0f} ms, p99 {every['p99'] * 1000:,.0f}"
            f" ms (A's {a['p99'] * 1000:,.0f}, B's {b['p99'] * 1000:,.0f}), max"
            f" {every['max'] * 1000:,.0f} ms; over 2 s: {every['over_target']} (A's"
            f" {a['over_target']}, B's {b['over_target']}), over 10 s: {every['over_10s']},"
            f" not seen {every['not_seen']};"
            f" admin answered in {p['admin_answer_s'] * 1000:.0f} ms"
        )
    pc = result["pause_cpu"]
    print(
        f"  CPU from publishing {VERSIONS[0]} until every store had it ({pc['seconds']:.1f} s):"
        f" central {pc['central']:.2f} s, PostgreSQL {pc['postgres']:.2f} s, the stores"
        f" {pc['workers']:.2f} s ({pc['workers'] / max(1, o['stores']) * 1000:.1f} ms per store),"
        f" other processes {pc['others']:.2f} s"
    )
    print(f"  rules in force at the end: {result['active_rules_at_end']}")
    once = result["exactly_once"]
    print("\nexactly once (store databases vs central's events table):")
    print(
        f"  {once['store_event_ids']:,} event ids made at the stores ({once['posted_checks']:,}"
        f" posted checks, {once['burst_events']:,} burst events); central holds"
        f" {once['central_events']:,}: missing {once['missing_at_central']},"
        f" extra {once['extra_at_central']}, not accepted {once['not_accepted']}, under another"
        f" store {once['wrong_store']}, check keys with more than one event"
        f" {once['check_keys_with_more_than_one_event']}, stores whose counts differ"
        f" {once['stores_whose_check_counts_differ']}; left in outboxes"
        f" {once['left_in_outboxes']}, dead letters {once['dead_letters']}, refused posts"
        f" {once['refused_posts']}"
    )


def rows(result: dict[str, Any]) -> list[common.Row]:
    """The DESIGN.md section 7 rows: every event once; the pause within 2 s (p99)."""
    o, once, pause = result["options"], result["exactly_once"], result["pause"]
    steady = result["steady"]
    cpu = steady["cpu_us_per_event"]
    return [
        common.Row(
            f"fleet: {o['stores']} stores into one central (PostgreSQL): every event once",
            f"{once['central_events']:,} of {once['store_event_ids']:,}, missing"
            f" {once['missing_at_central']}, extra {once['extra_at_central']}",
            cpu=f"{common.us(cpu['central'] + cpu['postgres'])} per event",
            met=bool(once["met"]),
        ),
        common.Row(
            f"fleet: central's pause seen by every store within {PAUSE_TARGET_S:g} s (p99)",
            f"p99 {pause['all']['p99']:.2f} s, not seen {pause['all']['not_seen']}",
            met=bool(pause["met"]),
        ),
    ]
