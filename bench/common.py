"""What the baselines and the gateway runs share: reading payloads shaped like the
gateway's, a subscriber that notes when each reading arrives, percentiles, CPU time."""

from __future__ import annotations

import json
import resource
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker import Mosquitto

#: One result of one measurement, as a child process reports it (JSON-serialisable).
Result = dict[str, Any]

GATEWAY_ID = "gw-bench"
TOWNSHIP = "benchtown"
TOPIC_ROOT = f"vitals/v1/{TOWNSHIP}/{GATEWAY_ID}"
READINGS_PER_MESSAGE = 50
MAX_INFLIGHT = 20
#: Metrics per device per second: a CMS50 reduced to 1 Hz reports SpO2, pulse rate and
#: perfusion index; an eldercare floor has ~60 such devices, a household ~6.
METRICS_PER_DEVICE = 3
FLOOR_DEVICES = 60
HOUSEHOLD_DEVICES = 6
#: Latency probes left out of the figures: the first message to a fresh subscriber
#: connection often takes ~40 ms more on loopback, whoever sends it.
WARMUP_PROBES = 3


#: Every mosquitto this process started, so that a signal can kill them on the way out.
BROKERS: list[Mosquitto] = []


def start_broker(workdir: Path | None = None) -> Mosquitto:
    """A fresh mosquitto on a free loopback port (gateway.broker.Mosquitto)."""
    broker = Mosquitto(workdir=workdir)
    BROKERS.append(broker)
    return broker.start()


def reading_payload(
    seq: int, device: str, value: float = 97, metric: str = "spo2"
) -> dict[str, Any]:
    """A reading exactly as the gateway publishes and stores it (~220 bytes of JSON)."""
    return {
        "id": f"{GATEWAY_ID}-{seq}",
        "seq": seq,
        "device": device,
        "subject": "bed-01",
        "metric": metric,
        "value": value,
        "unit": "%",
        "site": None,
        "quality": [],
        "measured_at": None,
        "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "clock": "synced",
    }


def readings_message(device: str, readings: list[dict[str, Any]], backlog: bool = False) -> bytes:
    """A `readings/<device>` message body as the gateway builds it."""
    body = {"gateway": GATEWAY_ID, "device": device, "backlog": backlog, "readings": readings}
    return json.dumps(body, separators=(",", ":")).encode()


def probe_value(k: int) -> float:
    """The value of the k-th probe reading: unique per probe, which is how arrivals are
    matched to probes."""
    return round(1 + k / 1000, 3)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks; `q` in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    """Current resident set size of this process (`VmRSS`, in kB, in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def disk_write_bytes() -> int:
    """Bytes this process (every thread) has sent to the storage layer so far: from
    /proc/self/io, `write_bytes` less `cancelled_write_bytes` (dirty pages truncated
    before writeback, such as a deleted write-ahead log's, never reach the disk)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])


def new_client(client_id: str = "") -> mqtt.Client:
    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )


class ArrivalClock:
    """A paho subscriber on its own network thread (MQTT 5, QoS 1, like the township
    server's): for every reading that arrives it notes `time.perf_counter()` against the
    reading's value, which the sender makes unique per probe."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrivals: dict[float, float] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._topic = topic
        self._port = port
        self._client = new_client()
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._on_message

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        body = json.loads(msg.payload)
        with self._lock:
            for reading in body.get("readings", []):
                self.arrivals.setdefault(float(reading["value"]), now)

    def start(self) -> ArrivalClock:
        self._client.connect("127.0.0.1", self._port)
        self._client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError(f"subscriber could not subscribe to {self._topic}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def arrived(self, value: float) -> float | None:
        with self._lock:
            return self.arrivals.get(value)

    def latencies_ms(self, sent: dict[float, float]) -> tuple[list[float], int]:
        """Latencies of the probes in `sent` (value -> send time, in sending order) but
        the first `WARMUP_PROBES`, and how many of those never arrived."""
        with self._lock:
            got = dict(self.arrivals)
        measured = list(sent.items())[WARMUP_PROBES:]
        latencies = [(got[v] - t) * 1000 for v, t in measured if v in got]
        return latencies, len(measured) - len(latencies)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.002)


def latency_summary(latencies: list[float], lost: int) -> Result:
    return {
        "samples": len(latencies),
        "lost": lost,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
    }
