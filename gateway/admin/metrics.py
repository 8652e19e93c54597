"""Prometheus metrics of one gateway, in a registry of its own (tests run several gateways in
one process). Gauges are set from the status just before each scrape; counters come straight
from the components' own tallies, so nothing is counted twice or kept in two places."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

Tally = Callable[[], Mapping[tuple[str, ...], float]]


class _TallyCollector(Collector):
    """A counter whose values some component already keeps (e.g. requests by command)."""

    def __init__(self, name: str, documentation: str, labels: list[str], tally: Tally) -> None:
        self._name, self._doc, self._labels, self._tally = name, documentation, labels, tally

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labels)
        for label_values, value in sorted(self._tally().items()):
            family.add_metric(list(label_values), value)
        yield family


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


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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

    def update(self, status: Mapping[str, Any]) -> None:
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
