"""The running gateway's figures in the Prometheus text format (prometheus-client), for
`/metrics` (`gateway/web/metrics.py`, which loads this module on the first scrape: a
gateway nobody scrapes never holds prometheus-client in memory).

The figures are read at each scrape from what the service already holds (its health,
the pipeline's and the uplink's counters, the open alerts): a custom collector, no
metric objects kept in step with the service. Counters count since the process
started, as Prometheus expects (a restart resets them). The queue figures are the
service's, refreshed every few seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from drivers.listener import LinkState
from gateway.model import Alert, AlertKind
from gateway.uplink import BrokerState, UplinkHealth

#: The media type of `metrics_text`.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_PREFIX = "bedside_gateway_"


class _Counted(Protocol):
    @property
    def counters(self) -> Mapping[str, int]: ...


class _Uplink(Protocol):
    @property
    def health(self) -> UplinkHealth: ...


class _Care(Protocol):
    def open_alerts(self) -> list[Alert]: ...


class MetricsSource(Protocol):
    """What the metrics read from the running service (`GatewayService`)."""

    def health(self) -> dict[str, Any]: ...

    def device_records(self) -> list[dict[str, Any]]: ...

    @property
    def pipeline(self) -> _Counted: ...

    @property
    def uplink(self) -> _Uplink: ...

    @property
    def care(self) -> _Care: ...


class GatewayCollector(Collector):
    """Every `bedside_gateway_*` metric, from `source` at each collect."""

    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        source = self._source
        health = source.health()
        queue, up = health["queue"], source.uplink.health
        counted = source.pipeline.counters
        yield InfoMetricFamily(
            _PREFIX[:-1],
            "The gateway's identity and version.",
            value={
                "gateway": health["gateway"],
                "township": health["township"],
                "version": health["version"],
            },
        )
        yield _gauge(
            "start_time_seconds",
            "When the gateway started, in Unix seconds.",
            datetime.fromisoformat(health["started_at"]).timestamp(),
        )
        yield _gauge(
            "queue_undelivered_readings",
            "Readings stored and not yet acknowledged by the broker (queue depth).",
            queue["undelivered"],
        )
        oldest = queue["oldest_undelivered_at"]
        yield _gauge(
            "queue_oldest_undelivered_age_seconds",
            "Age of the oldest reading not yet acknowledged by the broker; 0 when none waits.",
            (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0,
        )
        yield _gauge(
            "queue_undelivered_alert_events",
            "Alert events not yet acknowledged by the broker.",
            queue["undelivered_alert_events"],
        )
        yield _gauge("store_bytes", "Bytes of data in the store.", queue["store_bytes"])
        yield _counter(
            "evicted_undelivered_readings",
            "Readings deleted undelivered because the store was full (kept across restarts).",
            queue["evicted_undelivered"],
        )
        yield _counter(
            "readings_accepted",
            "Readings committed to the store.",
            counted.get("readings_accepted", 0),
        )
        yield _counter(
            "readings_from_unbound_devices",
            "Measurements dropped because their device is bound to no subject.",
            counted.get("readings_from_unbound_device", 0),
        )
        yield _counter(
            "readings_refused",
            "Measurements refused because the queue to the store was full (a stuck store).",
            counted.get("readings_refused", 0),
        )
        refused = CounterMetricFamily(
            _PREFIX + "refused_packets",
            "Device packets refused: malformed (truncated, checksum, implausible) or by a"
            " security check (replayed, downgraded, decryption failed).",
            labels=["reason"],
        )
        refused.add_metric(["malformed"], counted.get("malformed_packets", 0))
        refused.add_metric(["security"], counted.get("security_rejections", 0))
        yield refused
        yield _gauge(
            "broker_connected",
            "1 while connected to the township broker.",
            1 if up.state is BrokerState.CONNECTED else 0,
        )
        yield _counter(
            "broker_connections",
            "Connections made to the broker; each after the first is a reconnect.",
            up.connects,
        )
        yield _counter(
            "broker_published_messages", "MQTT messages published.", up.published_messages
        )
        yield _counter(
            "broker_rejected_messages",
            "MQTT messages the broker refused (e.g. by its ACL); they are sent again.",
            up.rejected_messages,
        )
        yield _counter(
            "delivered_readings",
            "Readings acknowledged by the broker.",
            up.delivered_readings,
        )
        faults = GaugeMetricFamily(
            _PREFIX + "part_faulty",
            "1 for each part of the gateway that is down or degraded (the page says why).",
            labels=["part"],
        )
        for part in sorted({fault["part"] for fault in health["faults"]}):
            faults.add_metric([part], 1)
        yield faults
        restarts = CounterMetricFamily(
            _PREFIX + "part_restarts",
            "Restarts of a supervised part after it ended unasked.",
            labels=["part"],
        )
        for part, n in sorted(health["restarts"].items()):
            restarts.add_metric([part], n)
        yield restarts
        links = Counter(record["link"] for record in source.device_records())
        devices = GaugeMetricFamily(
            _PREFIX + "devices", "Configured devices by link state.", labels=["link"]
        )
        for state in LinkState:
            devices.add_metric([state.value], links[state.value])
        yield devices
        kinds = Counter(alert.kind for alert in source.care.open_alerts())
        alerts = GaugeMetricFamily(
            _PREFIX + "open_alerts", "Alerts not cleared, by kind.", labels=["kind", "class"]
        )
        for kind in AlertKind:
            alerts.add_metric([kind.value, kind.alert_class.value], kinds[kind])
        yield alerts


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(_PREFIX + name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """`name` without `_total`: the text format adds it."""
    return CounterMetricFamily(_PREFIX + name, documentation, value=value)


def metrics_text(source: MetricsSource) -> bytes:
    """The metrics in the Prometheus text format 0.0.4."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(source))
    return generate_latest(registry)
