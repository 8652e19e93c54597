"""Prometheus metrics of one gateway, in a registry of its own (tests run several gateways in
one process). Gauges are set from the status just before each scrape; counters come straight
from the components' own tallies (the sync counters from the same status document that `/status`
serves), so nothing is counted twice or kept in two places. The registry also holds the
process's own metrics (`process_*`, `python_*`) and `edge_gateway_build_info`.

This module never imports the adapters or sync: the daemon hands it their stats objects, read
through the protocols below."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge, Info, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__

Tally = Callable[[], Mapping[tuple[str, ...], float]]
Rows = list[tuple[list[str], float]]

# Label values central chooses (record kinds it sends) are capped; the rest are summed here.
MAX_KIND_LABELS = 20
OTHER_KINDS = "_other"


def _counter(name: str, documentation: str, labels: Sequence[str], rows: Rows) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for label_values, value in rows:
        family.add_metric(label_values, value)
    return family


class _TallyCollector(Collector):
    """A counter whose values some component already keeps (e.g. requests by command)."""

    def __init__(self, name: str, documentation: str, labels: list[str], tally: Tally) -> None:
        self._name, self._doc, self._labels, self._tally = name, documentation, labels, tally

    def collect(self) -> Iterable[Metric]:
        rows = [(list(values), value) for values, value in sorted(self._tally().items())]
        yield _counter(self._name, self._doc, self._labels, rows)


LatencyTally = Callable[[], Mapping[str, tuple[Sequence[float], Sequence[int], float]]]


class _LatencyCollector(Collector):
    """Answer times per command, from the service's own histograms."""

    def __init__(self, tally: LatencyTally) -> None:
        self._tally = tally

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "edge_gateway_request_seconds",
            "Time the gateway took to answer a register request, by command",
            labels=["command"],
        )
        for command, (bounds, counts, total) in sorted(self._tally().items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*bounds, float("inf")], counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric([command], buckets, total)
        yield family


# ---- register adapters: protocol errors and transport trouble -----------------------------------


class ReplyCounts(Protocol):
    """What a register protocol's responder counts (SIM on TCP or serial lines, MQTT)."""

    @property
    def errors(self) -> Mapping[str, int]: ...  # reason -> ERROR replies

    @property
    def internal_errors(self) -> int: ...  # requests a bug failed (answered UNAVAILABLE)


class FrameCounts(Protocol):
    """What a byte transport's frame decoding counts (the SIM TCP server, one serial line)."""

    @property
    def frame_errors(self) -> Mapping[str, int]: ...  # reason -> frames the codec refused

    @property
    def dropped_bytes(self) -> int: ...

    @property
    def partial_timeouts(self) -> int: ...


class ConnectionCounts(Protocol):
    """What a listener counts about connections it turned away (the SIM TCP server)."""

    @property
    def refused(self) -> Mapping[str, int]: ...

    @property
    def evicted(self) -> Mapping[str, int]: ...

    @property
    def accept_failures(self) -> int: ...


@dataclass(frozen=True)
class _Adapter:
    replies: ReplyCounts
    frames: Sequence[FrameCounts]
    connections: ConnectionCounts | None
    outages: Callable[[], int] | None


def _summed(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + n
    return total


class _AdapterCollector(Collector):
    """Per register adapter, from the adapters' own counters, read at each scrape. A family is
    left out while no adapter has what it counts (e.g. no TCP listener: no refused connections)."""

    def __init__(self) -> None:
        self.adapters: dict[str, _Adapter] = {}

    def collect(self) -> Iterable[Metric]:
        adapters = sorted(self.adapters.items())

        def by_reason(read: Callable[[_Adapter], Mapping[str, int] | None]) -> Rows:
            rows: Rows = []
            for name, adapter in adapters:
                counts = read(adapter)
                rows += [([name, key], float(n)) for key, n in sorted((counts or {}).items())]
            return rows

        def per_adapter(read: Callable[[_Adapter], int | None]) -> Rows:
            values = ((name, read(adapter)) for name, adapter in adapters)
            return [([name], float(value)) for name, value in values if value is not None]

        def frames(read: Callable[[FrameCounts], int]) -> Callable[[_Adapter], int | None]:
            return lambda a: sum(read(f) for f in a.frames) if a.frames else None

        yield _counter(
            "edge_gateway_protocol_errors",
            "Register requests answered ERROR (or dropped when they cannot be addressed), by"
            " adapter and reason (BAD_FIELD, BAD_CHECKSUM, UNKNOWN_COMMAND, FRAME_TOO_LARGE ...)",
            ["adapter", "reason"],
            by_reason(lambda a: a.replies.errors),
        )
        yield _counter(
            "edge_gateway_internal_errors",
            "Register requests that failed inside the gateway (answered UNAVAILABLE; see the log)",
            ["adapter"],
            per_adapter(lambda a: a.replies.internal_errors),
        )
        if any(hasattr(a.replies, "pipe_replaced") for _, a in adapters):
            yield _counter(
                "edge_gateway_pipe_values_replaced",
                "Reply values sent in the pipe style whose | was sent as / (sim.reply_style)",
                ["adapter"],
                per_adapter(lambda a: getattr(a.replies, "pipe_replaced", None)),
            )
        if any(a.frames for _, a in adapters):
            yield _counter(
                "edge_gateway_frame_errors",
                "Of the protocol errors, frames the transport refused before reading the request"
                " (checksum, framing, size), by adapter and reason",
                ["adapter", "reason"],
                by_reason(lambda a: _summed(f.frame_errors for f in a.frames)),
            )
            yield _counter(
                "edge_gateway_dropped_bytes",
                "Bytes received outside any frame, or of a frame given up on, and discarded",
                ["adapter"],
                per_adapter(frames(lambda f: f.dropped_bytes)),
            )
            yield _counter(
                "edge_gateway_partial_frame_timeouts",
                "Frames begun and not finished within sim.read_timeout_s (discarded)",
                ["adapter"],
                per_adapter(frames(lambda f: f.partial_timeouts)),
            )
        if any(a.connections for _, a in adapters):
            yield _counter(
                "edge_gateway_connections_refused",
                "Register connections refused at once, by reason (not_allowed: not in sim.allow)",
                ["adapter", "reason"],
                by_reason(lambda a: a.connections.refused if a.connections else None),
            )
            yield _counter(
                "edge_gateway_connections_evicted",
                "Idle register connections closed to make room, by reason (peer_cap, total_cap,"
                " descriptors)",
                ["adapter", "reason"],
                by_reason(lambda a: a.connections.evicted if a.connections else None),
            )
            yield _counter(
                "edge_gateway_accept_failures",
                "Connections the listener could not accept (out of file descriptors)",
                ["adapter"],
                per_adapter(lambda a: a.connections.accept_failures if a.connections else None),
            )
        if any(a.outages for _, a in adapters):
            yield _counter(
                "edge_gateway_adapter_outages",
                "Times a serial line went away or the MQTT broker connection was lost",
                ["adapter"],
                per_adapter(lambda a: a.outages() if a.outages else None),
            )


# ---- sync: the counters /status shows, as counters ------------------------------------------

# status["sync"] key -> (family name without _total, help)
SYNC_COUNTERS: dict[str, tuple[str, str]] = {
    "delivered": ("edge_gateway_events_delivered", "Events central answered for, in batches"),
    "batches": ("edge_gateway_delivery_batches", "Batches of events central answered"),
    "retries": (
        "edge_gateway_delivery_retries",
        "Batch deliveries that failed and were tried again (central away, slow or refusing)",
    ),
    "split_batches": (
        "edge_gateway_split_batches",
        "Batches central refused as a whole, split to find the event it refuses",
    ),
    "refresh_pages": ("edge_gateway_refresh_pages", "Pages of changes read from central"),
    "refresh_failures": (
        "edge_gateway_refresh_failures",
        "Cache refreshes from central that failed (retried at the next interval)",
    ),
    "bad_records": (
        "edge_gateway_refresh_bad_records",
        "Records from central that did not validate, skipped",
    ),
    "cursor_stalls": (
        "edge_gateway_changes_cursor_stalls",
        "Pages where central answered has_more with a cursor already asked with",
    ),
    "snapshot_bytes": (
        "edge_gateway_snapshot_file_bytes",
        "Bytes of central's snapshot file downloaded (a new store's bootstrap)",
    ),
    "snapshot_resumed": (
        "edge_gateway_snapshot_file_resumed",
        "Downloads of central's snapshot file resumed after a cut (Range)",
    ),
    "snapshots_applied": (
        "edge_gateway_snapshot_files_applied",
        "Snapshot files from central applied to the cache",
    ),
    "snapshots_rejected": (
        "edge_gateway_snapshot_files_rejected",
        "Snapshot files from central not applied because they were damaged",
    ),
    "removals_refused": (
        "edge_gateway_snapshot_removals_refused",
        "Full snapshots whose removal of records was refused (central.max_removal_share)",
    ),
}


def _kind_rows(kinds: Mapping[str, Any]) -> Rows:
    counted = sorted(((str(k), float(n)) for k, n in kinds.items()), key=lambda kv: -kv[1])
    rows: Rows = [([kind], n) for kind, n in sorted(counted[:MAX_KIND_LABELS])]
    if len(counted) > MAX_KIND_LABELS:
        rows.append(([OTHER_KINDS], sum(n for _, n in counted[MAX_KIND_LABELS:])))
    return rows


class _SyncCollector(Collector):
    """The forwarder's, refresher's and central client's counters as the last status had them
    (taken just before the scrape). Without a central there are none."""

    def __init__(self) -> None:
        self.status: Mapping[str, Any] = {}

    def collect(self) -> Iterable[Metric]:
        sync = self.status.get("sync") or {}
        if not sync:
            return
        for key, (name, documentation) in SYNC_COUNTERS.items():
            yield _counter(name, documentation, [], [([], float(sync.get(key) or 0))])
        yield _counter(
            "edge_gateway_refresh_unknown_kinds",
            f"Records of a kind this gateway does not know, skipped, by kind (the top"
            f" {MAX_KIND_LABELS}; the rest as {OTHER_KINDS})",
            ["kind"],
            _kind_rows(sync.get("unknown_kinds") or {}),
        )
        central = self.status.get("central") or {}
        yield _counter(
            "edge_gateway_central_outages",
            "Times central went away (each logged once as central_unreachable)",
            [],
            [([], float(central.get("outages") or 0))],
        )


class GatewayMetrics:
    def __init__(self, version: str = __version__) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_*: CPU, memory, open files (Linux)
        PlatformCollector(registry=r)  # python_info
        Info("edge_gateway_build", "The gateway's version", registry=r).info({"version": version})
        self._adapters = _AdapterCollector()
        r.register(self._adapters)
        self._sync = _SyncCollector()
        r.register(self._sync)
        self.outbox_depth = Gauge(
            "edge_gateway_outbox_depth", "Events waiting to be sent to central", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "edge_gateway_outbox_oldest_age_seconds",
            "Age of the oldest event waiting for central",
            registry=r,
        )
        self.dead_letters = Gauge(
            "edge_gateway_dead_letters", "Events central rejected, kept for review", registry=r
        )
        self.offline_conflicts = Gauge(
            "edge_gateway_offline_coupon_conflicts",
            "Coupons allowed offline that central found used elsewhere",
            registry=r,
        )
        self.central_online = Gauge(
            "edge_gateway_central_online", "1 when central answered recently, else 0", registry=r
        )
        self.last_sync = Gauge(
            "edge_gateway_last_refresh_timestamp_seconds",
            "Unix time of the last complete cache refresh",
            registry=r,
        )
        self.last_delivery = Gauge(
            "edge_gateway_last_delivery_timestamp_seconds",
            "Unix time of the last batch central answered",
            registry=r,
        )
        self.cache_members = Gauge("edge_gateway_cache_members", "Members cached", registry=r)
        self.cache_coupons = Gauge("edge_gateway_cache_coupons", "Coupons cached", registry=r)
        self.connections = Gauge(
            "edge_gateway_adapter_connections", "Open register connections", ["adapter"], registry=r
        )
        self.storage_full = Gauge(
            "edge_gateway_storage_full",
            "1 while a check cannot be stored (the database or disk is full)",
            registry=r,
        )
        self.database_writable = Gauge(
            "edge_gateway_database_writable",
            "0 while this process cannot write its database (owner or mode of the files)",
            registry=r,
        )
        self.outbox_in_memory = Gauge(
            "edge_gateway_outbox_in_memory",
            "Identification events not on disk yet (kept while the disk refuses them)",
            registry=r,
        )
        self.cursor_stuck = Gauge(
            "edge_gateway_changes_cursor_stuck",
            "1 while central answers has_more with a cursor already asked with",
            registry=r,
        )
        self.removal_refused = Gauge(
            "edge_gateway_snapshot_removal_refused",
            "1 while the last full snapshot's removal was refused (central.max_removal_share)",
            registry=r,
        )
        self.clock_skew = Gauge(
            "edge_gateway_clock_skew_suspected",
            "1 while registers send business dates later than tomorrow by this gateway's clock",
            registry=r,
        )

    def add_tally(self, name: str, documentation: str, labels: list[str], tally: Tally) -> None:
        self.registry.register(_TallyCollector(name, documentation, labels, tally))

    def add_latency(self, tally: LatencyTally) -> None:
        self.registry.register(_LatencyCollector(tally))

    def add_adapter(
        self,
        name: str,
        *,
        replies: ReplyCounts,
        frames: Sequence[FrameCounts] = (),
        connections: ConnectionCounts | None = None,
        outages: Callable[[], int] | None = None,
    ) -> None:
        """A register adapter's counters: its responder's (`replies`), its transports' frame
        decoding (`frames`: the TCP server's, or each serial line's, summed), its listener's
        (`connections`) and how often its link went away (`outages`)."""
        self._adapters.adapters[name] = _Adapter(replies, tuple(frames), connections, outages)

    def update(self, status: Mapping[str, Any]) -> None:
        self._sync.status = status
        outbox = status.get("outbox", {})
        self.outbox_depth.set(outbox.get("depth") or 0)
        self.outbox_oldest_age.set(outbox.get("oldest_age_s") or 0)
        self.dead_letters.set(status.get("dead_letters") or 0)
        self.offline_conflicts.set(status.get("offline_conflicts") or 0)
        central = status.get("central", {})
        self.central_online.set(1 if central.get("state") == "ONLINE" else 0)
        sync = status.get("sync", {})
        self.last_sync.set(sync.get("last_refresh") or 0)
        self.last_delivery.set(sync.get("last_delivery") or 0)
        self.cursor_stuck.set(1 if sync.get("cursor_stuck") else 0)
        self.removal_refused.set(1 if sync.get("refused_removal") else 0)
        cache = status.get("cache", {})
        self.cache_members.set(cache.get("members") or 0)
        self.cache_coupons.set(cache.get("coupons") or 0)
        for name, adapter in status.get("adapters", {}).items():
            self.connections.labels(adapter=name).set(adapter.get("connections") or 0)
        self.storage_full.set(1 if status.get("storage_full") else 0)
        self.database_writable.set(0 if status.get("database_problem") else 1)
        self.outbox_in_memory.set(outbox.get("in_memory") or 0)
        self.clock_skew.set(1 if status.get("clock_skew") else 0)
