"""`bedside-gateway scan`: the Bluetooth devices in range, for a technician binding
devices. For each: the kind the gateway would guess from its advertisements, its
address, name and strongest signal during the scan, and the device id and subject it is
bound to in the configuration, if any.

Names are shown only for devices the gateway can read or has bound: phones and earbuds
are often named after their owners, and a scan on a ward must not list people.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bumble.core import BaseBumbleError

from drivers.ble.adapter import BleAdapter, open_ble_adapter
from drivers.kinds import classify_advertisement, shown_name
from gateway.config import DeviceConfig, load_config

#: Opening an adapter and starting a scan take well under this; past it the adapter hangs.
_SET_UP_S = 30.0


@dataclass(slots=True)
class Heard:
    """What one device's advertisements said during the scan, put together."""

    name: str | None = None
    rssi: int | None = None
    service_uuids: set[str] = field(default_factory=set)
    service_data: dict[str, bytes] = field(default_factory=dict)

    def add(self, advertisement: AdvertisementData) -> None:
        # Names and UUIDs may come in some advertisements (or scan responses) only.
        self.name = advertisement.local_name or self.name
        if self.rssi is None or advertisement.rssi > self.rssi:
            self.rssi = advertisement.rssi
        self.service_uuids.update(advertisement.service_uuids)
        self.service_data.update(advertisement.service_data)


async def scan_nearby(adapter: BleAdapter, seconds: float) -> dict[str, Heard]:
    """Every device heard in `seconds` of active scanning, by upper-case address."""
    heard: dict[str, Heard] = {}

    def on_advertisement(device: BLEDevice, advertisement: AdvertisementData) -> None:
        heard.setdefault(device.address.upper(), Heard()).add(advertisement)

    async with BleakScanner(on_advertisement, scanning_mode="active", **adapter.scanner_kwargs()):
        await asyncio.sleep(seconds)
    return heard


def nearby_rows(heard: dict[str, Heard], bound: Iterable[DeviceConfig]) -> list[dict[str, Any]]:
    """One row per device, strongest signal first."""
    by_address = {d.address: d for d in bound}
    rows = []
    for address, heard_from in heard.items():
        name, uuids = heard_from.name, sorted(heard_from.service_uuids)
        kind = classify_advertisement(name, uuids, heard_from.service_data)
        binding = by_address.get(address)
        rows.append(
            {
                "kind": kind,
                "address": address,
                "name": shown_name(name, kind, bound=binding is not None),
                "rssi": heard_from.rssi,
                "bound": binding is not None,
                "device": binding.device_id if binding else None,
                "subject": binding.subject if binding else None,
            }
        )
    return sorted(rows, key=lambda r: (r["rssi"] is None, -(r["rssi"] or 0), r["address"]))


def format_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [f"{'KIND':<9} {'ADDRESS':<17} {'RSSI':>4}  {'NAME':<24} BOUND TO"]
    for row in rows:
        bound_to = "-"
        if row["bound"]:
            bound_to = row["device"] + (f" ({row['subject']})" if row["subject"] else "")
        rssi = "" if row["rssi"] is None else row["rssi"]
        lines.append(
            f"{row['kind'] or '?':<9} {row['address']:<17} {rssi:>4}  {row['name'] or '-':<24}"
            f" {bound_to}"
        )
    return lines


async def scan(
    adapter_spec: str,
    seconds: float,
    bound: Sequence[DeviceConfig] = (),
    *,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Scan and print; 2 with one line on stderr when the adapter cannot scan."""
    try:
        adapter = open_ble_adapter(adapter_spec)
        async with asyncio.timeout(_SET_UP_S + seconds), adapter:
            heard = await scan_nearby(adapter, seconds)
    except (BleakError, BaseBumbleError, OSError, ValueError) as error:
        reason = str(error) or type(error).__name__
        no_bus = isinstance(error, FileNotFoundError | ConnectionError)  # its socket
        if no_bus and adapter_spec.startswith("bluez"):
            reason = f"no BlueZ on the D-Bus system bus ({reason})"
        print(f"error: cannot scan with {adapter_spec!r}: {reason}", file=sys.stderr)
        return 2
    rows = nearby_rows(heard, bound)
    if as_json:
        lines = [json.dumps(row) for row in rows]
    elif rows:
        lines = format_table(rows)
    else:
        lines = [f"no Bluetooth device heard in {seconds:g} s"]
    for line in lines:
        print(line, file=out)
    return 0


def run_scan(
    config_path: str | None, adapter_spec: str | None, seconds: float, *, as_json: bool
) -> int:
    """The `scan` command: the adapter and bindings of a configuration, or an adapter
    alone (default: BlueZ). Raises ConfigError on a bad configuration."""
    if not seconds > 0:
        print("error: --seconds must be more than 0", file=sys.stderr)
        return 2
    bound: Sequence[DeviceConfig] = ()
    if config_path is not None:
        config = load_config(Path(config_path))
        adapter_spec, bound = config.bluetooth.adapter, config.devices
    return asyncio.run(scan(adapter_spec or "bluez", seconds, bound, as_json=as_json))
