"""The baselines: what raw sqlite3 and raw paho-mqtt do on this machine, now.

They use the same schema, payload sizes and MQTT settings as the gateway, but none of
its code, so `gateway figure / baseline` is the share of the machine's limit the
gateway reaches. Payloads are built before the clock starts: these are the limits of
the storage and the transport, not of building JSON.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    MAX_INFLIGHT,
    READINGS_PER_MESSAGE,
    TOPIC_ROOT,
    WARMUP_PROBES,
    ArrivalClock,
    Result,
    cpu_seconds,
    latency_summary,
    new_client,
    probe_value,
    reading_payload,
    readings_message,
    start_broker,
)

ROWS_PER_TRANSACTION = 500
ROUNDS = 3

_SCHEMA = """
CREATE TABLE readings (
    seq INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    received_at TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL
);
CREATE INDEX readings_undelivered ON readings(seq) WHERE delivered = 0;
"""


def sqlite_rows(rows: int, workdir: Path) -> Result:
    """Baseline A: sqlite3 in WAL with synchronous=FULL, the gateway's `readings` table
    (with its partial index), ~220-byte JSON payloads, 500 rows per transaction."""
    data = [
        (
            seq,
            f"cms50-bed-{seq % 60:02d}",
            "spo2",
            "2026-11-22T08:00:00.000+00:00",
            0,
            json.dumps(reading_payload(seq, f"cms50-bed-{seq % 60:02d}"), separators=(",", ":")),
        )
        for seq in range(1, rows + 1)
    ]
    rates: list[float] = []
    for round_ in range(ROUNDS):
        conn = sqlite3.connect(workdir / f"baseline-{round_}.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        start = time.perf_counter()
        for i in range(0, rows, ROWS_PER_TRANSACTION):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO readings(seq, device, metric, received_at, delivered, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                data[i : i + ROWS_PER_TRANSACTION],
            )
            conn.execute("COMMIT")
        rates.append(rows / (time.perf_counter() - start))
        conn.close()
    return {
        "n": rows,
        "rate": statistics.median(rates),
        "rounds": [round(r) for r in rates],
        "payload_bytes": len(data[0][5]),
    }


def _connected_publisher(port: int) -> tuple[Any, threading.Semaphore, list[int]]:
    client = new_client()
    client.max_inflight_messages_set(MAX_INFLIGHT)
    window = threading.Semaphore(MAX_INFLIGHT)
    acked = [0]
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()

    def on_publish(_c: Any, _u: Any, _mid: int, _code: Any, _p: Any) -> None:
        acked[0] += 1
        window.release()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError("baseline publisher could not connect")
    return client, window, acked


def mqtt_publish(readings: int) -> Result:
    """Baseline B: paho-mqtt QoS 1, at most 20 in flight, 50 readings (~220 B each) per
    message, from the first publish until the last PUBACK."""
    messages = max(1, readings // READINGS_PER_MESSAGE)
    bodies = [
        readings_message(
            f"cms50-bed-{m % 60:02d}",
            [
                reading_payload(m * READINGS_PER_MESSAGE + i, f"cms50-bed-{m % 60:02d}")
                for i in range(READINGS_PER_MESSAGE)
            ],
        )
        for m in range(min(messages, 200))  # the same 200 bodies over and over
    ]
    broker = start_broker()
    try:
        rates: list[float] = []
        cpu: list[float] = []
        for _ in range(ROUNDS):
            client, window, acked = _connected_publisher(broker.port)
            cpu0 = cpu_seconds()
            start = time.perf_counter()
            for m in range(messages):
                window.acquire()  # keep the window full, as the gateway does; never queue
                body = bodies[m % len(bodies)]
                client.publish(f"{TOPIC_ROOT}/readings/cms50-bed-{m % 60:02d}", body, qos=1)
            while acked[0] < messages:
                time.sleep(0.0005)
            elapsed = time.perf_counter() - start
            cpu.append((cpu_seconds() - cpu0) / (messages * READINGS_PER_MESSAGE) * 1e6)
            rates.append(messages * READINGS_PER_MESSAGE / elapsed)
            client.disconnect()
            client.loop_stop()
    finally:
        broker.close()
    return {
        "n": messages * READINGS_PER_MESSAGE,
        "rate": statistics.median(rates),
        "rounds": [round(r) for r in rates],
        "messages": messages,
        "message_bytes": len(bodies[0]),
        "cpu_us_per_reading": statistics.median(cpu),
    }


def mqtt_latency(samples: int, interval_s: float) -> Result:
    """Baseline B latency: one reading per message every `interval_s` (a light load),
    QoS 1, from `publish()` to arrival at a subscriber on another thread."""
    broker = start_broker()
    topic = f"{TOPIC_ROOT}/readings/probe"
    clock = ArrivalClock(broker.port, topic).start()
    try:
        client, window, _ = _connected_publisher(broker.port)
        sent: dict[float, float] = {}
        next_at = time.perf_counter()
        for k in range(samples + WARMUP_PROBES):
            value = probe_value(k)
            body = readings_message(
                "probe", [reading_payload(k, "probe", value, "perfusion_index")]
            )
            window.acquire()
            sent[value] = time.perf_counter()
            client.publish(topic, body, qos=1)
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.perf_counter()))
        deadline = time.monotonic() + 5
        while len(clock.arrivals) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        client.disconnect()
        client.loop_stop()
        latencies, lost = clock.latencies_ms(sent)
    finally:
        clock.stop()
        broker.close()
    return {"n": samples, "interval_ms": interval_s * 1000, **latency_summary(latencies, lost)}
