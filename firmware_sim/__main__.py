"""`python -m firmware_sim ble ...` plays Bluetooth devices on a virtual radio;
`python -m firmware_sim esphome-proxy ...` an ESPHome Bluetooth proxy listening on it;
`python -m firmware_sim cms50 ...` plays a Contec CMS50 oximeter on a pseudo-terminal."""

from __future__ import annotations

import sys

COMMANDS = ("ble", "esphome-proxy", "cms50")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print(
            "usage: python -m firmware_sim {ble,esphome-proxy,cms50} [options]  (--help after each)"
        )
        return 0 if args and args[0] in ("-h", "--help") else 2
    if args[0] == "ble":
        from firmware_sim.ble_main import main as ble_main

        return ble_main(args[1:])
    if args[0] == "esphome-proxy":
        from firmware_sim.esphome.main import main as proxy_main

        return proxy_main(args[1:])
    from firmware_sim.serial_main import main as serial_main

    return serial_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
