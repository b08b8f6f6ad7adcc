"""`bedside-gateway township ...`: run a consumer, send a gateway a command, and the
reports (`gateways`, `gaps`, `alerts`) from the township's database.

Settings come from `--config FILE` (TOML: `[township]` and `[mqtt]`,
`gateway/township/config.py`) and the options, which override the file."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.config import ConfigError
from gateway.township.config import TownshipConfig, load_township_config
from gateway.township.store import TownshipStore


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.handler is None:
        parser.print_help()
        return 2
    return int(args.handler(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bedside-gateway township",
        description="The township server's side: store what the gateways publish, send"
        " them commands, report.",
    )
    parser.set_defaults(handler=None)
    sub = parser.add_subparsers(dest="subcommand")

    run = sub.add_parser("run", help="consume the gateways' messages into the database")
    _options(run, broker=True)
    run.add_argument("--group", help="shared subscription group (default: township)")
    run.add_argument(
        "--name", dest="consumer", help="this consumer's name in the group (default: 1)"
    )
    run.add_argument("--batch-max", type=int, help="most messages per transaction (500)")
    run.add_argument(
        "--repair-after",
        type=float,
        help="seconds a seq gap stays open before a resend is asked for (60; 0: never)",
    )
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(handler=_run)

    command = sub.add_parser("command", help="send a gateway a command, wait for its result")
    command.add_argument("gateway", help="the gateway's id")
    command.add_argument("name", help="the command: ping, resend, set_subject, ...")
    command.add_argument("--args", default="{}", help="its arguments, a JSON object")
    command.add_argument("--wait", type=float, default=10.0, help="seconds to wait (10)")
    command.add_argument("--id", help="the command's id (default: a new one)")
    _options(command, broker=True)
    command.set_defaults(handler=_command)

    for name, text in (
        ("gateways", "each gateway's state, last message, highest seq, gaps, alerts"),
        ("gaps", "the seq ranges still missing, per gateway"),
        ("alerts", "the active alerts"),
    ):
        report = sub.add_parser(name, help=text)
        _options(report, broker=False)
        report.set_defaults(handler=_report, report=name)
    return parser


def _options(parser: argparse.ArgumentParser, broker: bool) -> None:
    parser.add_argument("--config", type=Path, help="TOML file: [township] and [mqtt]")
    parser.add_argument("--database", help="SQLite file or URL (postgresql+psycopg://...)")
    if not broker:
        return
    parser.add_argument("--broker", help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--township", help="the township's name in the topics")
    parser.add_argument("--prefix", help="topic prefix (default: vitals/v1)")
    parser.add_argument("--username")
    parser.add_argument("--password-file", help="file holding the password")
    parser.add_argument("--ca-file", help="CA certificate of the broker (mqtts)")
    parser.add_argument("--client-cert")
    parser.add_argument("--client-key")


def _config(args: argparse.Namespace) -> TownshipConfig:
    township = {
        "name": args.township,
        "database": args.database,
        "group": getattr(args, "group", None),
        "consumer": getattr(args, "consumer", None),
        "batch_max": getattr(args, "batch_max", None),
        "repair_after_s": getattr(args, "repair_after", None),
    }
    mqtt = {
        "url": args.broker,
        "topic_prefix": args.prefix,
        "username": args.username,
        "password_file": args.password_file,
        "ca_file": args.ca_file,
        "client_cert": args.client_cert,
        "client_key": args.client_key,
    }
    return load_township_config(args.config, {"township": township, "mqtt": mqtt})


def _run(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.township.consumer import ConsumerSettings, TownshipConsumer

    config = _config(args)
    configure_logging(args.log_level)
    section = config.township
    settings = ConsumerSettings(
        config.mqtt,
        section.name,
        section.group,
        section.consumer,
        section.batch_max,
        section.repair_after_s,
    )
    store = TownshipStore(section.database)
    try:
        asyncio.run(_until_signalled(TownshipConsumer(settings, store).run))
    finally:
        store.close()
    return 0


async def _until_signalled(run: Callable[[], Any]) -> None:
    task = asyncio.ensure_future(run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def _command(args: argparse.Namespace) -> int:
    from gateway.township.commands import CommandNotSent, send_command

    config = _config(args)
    try:
        command_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--args: not JSON: {exc.msg}") from None
    if not isinstance(command_args, dict):
        raise ConfigError("--args: must be a JSON object")
    store = TownshipStore(config.township.database)
    try:
        result = asyncio.run(
            send_command(
                config.mqtt, config.township.name, args.gateway, args.name, command_args,
                args.wait, store, args.id,
            )
        )  # fmt: skip
    except CommandNotSent as exc:
        print(f"not sent: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if result is None:
        print(f"no answer within {args.wait:g} s", file=sys.stderr)
        return 3
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["ok"] else 1


def _report(args: argparse.Namespace) -> int:
    from gateway.township.reports import alerts_report, gaps_report, gateways_report

    if args.config is not None:
        database = _config_database(args)
    else:
        database = args.database or "township.sqlite3"
    store = TownshipStore(database)
    try:
        report = {"gateways": gateways_report, "gaps": gaps_report, "alerts": alerts_report}
        print(report[args.report](store))
    finally:
        store.close()
    return 0


def _config_database(args: argparse.Namespace) -> str:
    overrides = {"township": {"database": args.database}}
    return load_township_config(args.config, overrides).township.database
