"""`python -m firmware_sim ble ...` plays Bluetooth devices on a virtual radio;
`python -m firmware_sim cms50 ...` plays a Contec CMS50 oximeter on a pseudo-terminal."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in ("ble", "cms50"):
        print("usage: python -m firmware_sim {ble,cms50} [options]  (--help after each)")
        return 0 if args and args[0] in ("-h", "--help") else 2
    if args[0] == "ble":
        from firmware_sim.ble_main import main as ble_main

        return ble_main(args[1:])
    from firmware_sim.serial_main import main as serial_main

    return serial_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
