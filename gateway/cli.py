"""`bedside-gateway`: run the service, check a config, run the demo, watch the broker,
list the device kinds, decode device bytes, list the Bluetooth devices in range, set
the page's password.

User errors end with one line on stderr and a non-zero status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import ConfigError, load_config

#: Where `systemd/install.sh` puts the configuration.
DEFAULT_CONFIG = "/etc/bedside-gateway/gateway.toml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bedside-gateway", description="Bedside vital-sign gateway"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway service (what systemd starts)")
    run.add_argument("--config", required=True, help="path to the TOML configuration")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(handler=_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path")
    check.set_defaults(handler=_check_config)

    demo = sub.add_parser("demo", help="simulated devices -> gateway -> broker, on this machine")
    demo.add_argument(
        "--broker",
        help="mqtt://HOST:PORT of a broker to use, or 'builtin' for an in-process one"
        " (default: start mosquitto if installed, else the in-process one)",
    )
    demo.add_argument("--http", default="127.0.0.1:8080", help="status page HOST:PORT")
    demo.add_argument("--duration", type=float, help="stop after SECONDS and exit 0")
    demo.add_argument(
        "--scenario", default="fever", help="normal, fever, hypoxia, probe_off, drop_and_return"
    )
    demo.set_defaults(handler=_demo)

    tail = sub.add_parser("tail", help="print every message on the broker as JSON lines")
    tail.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    tail.add_argument("--topic", default="#", help="topic filter (default: #)")
    tail.set_defaults(handler=_tail)

    kinds = sub.add_parser("kinds", help="list the device kinds the gateway reads (Markdown)")
    kinds.set_defaults(handler=_kinds)

    decode = sub.add_parser("decode", help="decode device bytes into readings (JSON)")
    decode.add_argument(
        "decoder", help="hts-temperature, plx-continuous, berrymed, ... (see kinds)"
    )
    decode.add_argument("hex", nargs="+", help="bytes in hex, e.g. '02 61 00 48 00'")
    decode.add_argument("--key", help="encryption key in hex (bthome, mibeacon)")
    decode.add_argument("--mac", help="device MAC address (bthome, mibeacon)")
    decode.set_defaults(handler=_decode)

    scan = sub.add_parser("scan", help="list the Bluetooth devices in range, for binding")
    where = scan.add_mutually_exclusive_group()
    where.add_argument("--config", help="a configuration: its adapter and which devices it binds")
    where.add_argument("--adapter", help="bluez (default), bluez:hciN or bumble:TRANSPORT")
    scan.add_argument("--seconds", type=float, default=10.0, help="how long (default: 10)")
    scan.add_argument("--json", action="store_true", help="one JSON object per device and line")
    scan.set_defaults(handler=_scan)

    replay = sub.add_parser(
        "replay", help="feed recorded readings through the rules; print the alert events"
    )
    replay.add_argument("file", help="JSON lines of readings, as the township server received them")
    replay.add_argument("--config", help="a gateway configuration: subjects, devices, [rules]")
    replay.add_argument(
        "--until", help="RFC 3339 time: run the clock on to it (later readings are left out)"
    )
    replay.set_defaults(handler=_replay)

    password = sub.add_parser(
        "set-password", help="set the page's password (stored as an argon2 hash)"
    )
    password.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the gateway's configuration: where the hash goes (default: {DEFAULT_CONFIG})",
    )
    password.add_argument(
        "--stdin", action="store_true", help="read the password from one line of stdin"
    )
    password.set_defaults(handler=_set_password)

    township = sub.add_parser(
        "township", help="the township server: consume, command, report", add_help=False
    )
    township.add_argument("-h", "--help", action="store_true", help=argparse.SUPPRESS)
    township.add_argument("args", nargs=argparse.REMAINDER)
    township.set_defaults(handler=_township)
    return parser


def _township(args: argparse.Namespace) -> int:
    try:  # never loaded by the gateway, nor installed with it
        from gateway.township.cli import main as township
    except ModuleNotFoundError as exc:
        print(
            f"the township server needs what a gateway does not ({exc.name} is missing):"
            " pip install 'bedside-gateway[township]'",
            file=sys.stderr,
        )
        return 2
    return township(["--help"] if args.help else args.args)


def _set_password(args: argparse.Namespace) -> int:
    from gateway.web.auth import PasswordFile

    path = load_config(args.config).password_path
    if args.stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif not sys.stdin.isatty():
        print("stdin is not a terminal: pass --stdin to read the password from it", file=sys.stderr)
        return 2
    else:
        try:
            password = getpass.getpass("new password for the page: ")
            again = getpass.getpass("the same again: ")
        except EOFError:
            print("no password given: nothing changed", file=sys.stderr)
            return 2
        if again != password:
            print("the two passwords differ: nothing changed", file=sys.stderr)
            return 2
    try:
        PasswordFile(path).set(password)
        _owned_like_its_folder(path)
    except ValueError as exc:
        print(f"{exc}: nothing changed", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"password stored in {path} (as an argon2 hash); open logins have ended")
    return 0


def _owned_like_its_folder(path: Path) -> None:
    """Run as root (`sudo`), the file goes to the owner of its folder, the service's
    user under systemd: a root-owned 0600 file would be unreadable to the service."""
    if os.geteuid() == 0:
        folder = path.parent.stat()
        os.chown(path, folder.st_uid, folder.st_gid)


def _replay(args: argparse.Namespace) -> int:
    from gateway.replay import run_replay

    return run_replay(args.file, args.config, args.until, sys.stdout)


def _run(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.service import GatewayService

    config = load_config(args.config)
    configure_logging(args.log_level)
    asyncio.run(GatewayService(config).run_until_signalled())
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    print(
        f"ok: gateway {config.gateway.id}, {len(config.devices)} device(s),"
        f" broker {config.mqtt.url}, topics under {config.topic_root}/"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return asyncio.run(run_demo(args.broker, args.http, args.duration, args.scenario))


def _tail(args: argparse.Namespace) -> int:
    from gateway.tail import tail

    return tail(args.broker, args.topic)


def _decode(args: argparse.Namespace) -> int:
    from drivers.decode import DecodeError, decode

    try:
        measurements = decode(args.decoder, args.hex, key=args.key, mac=args.mac)
    except DecodeError as exc:
        print(f"cannot decode: {exc}", file=sys.stderr)
        return 2
    print(json.dumps([m.as_json() for m in measurements]))
    return 0


def _kinds(args: argparse.Namespace) -> int:
    from drivers.kinds import kinds_table

    print("\n".join(kinds_table()))
    return 0


def _scan(args: argparse.Namespace) -> int:
    from gateway.scan import run_scan

    return run_scan(args.config, args.adapter, args.seconds, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
