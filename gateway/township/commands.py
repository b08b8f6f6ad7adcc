"""Sending a gateway one command (`<root>/cmd/<name>`, docs/mqtt-contract.md) and
waiting for its answer on an MQTT 5 response topic of this sender's own
(`<root>/reply/<command id>`, which the broker's ACL lets the gateway write), with the
command id as correlation data. The command and its result go into the township's
database; the result also reaches the running consumers on `cmd/<name>/result`, so it
is stored even when this sender stops waiting first."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.config import MqttSection
from gateway.contract.models import CommandResult
from gateway.mqtt_connection import InboundMessage, MqttConnection, MqttConnectionError
from gateway.township.store import TownshipStore

#: The most readings one `resend` may ask for (docs/mqtt-contract.md).
MAX_RESEND = 2_000_000


class CommandNotSent(Exception):
    """The broker could not be reached or refused the command (its ACL)."""


def new_command_id(sender: str = "township") -> str:
    """Unique per sender: its time to the second and 48 random bits."""
    return f"{sender}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"


async def send_command(
    mqtt: MqttSection,
    township: str,
    gateway: str,
    name: str,
    args: dict[str, Any],
    wait_s: float,
    store: TownshipStore,
    command_id: str | None = None,
) -> dict[str, Any] | None:
    """Send `name` with `args` to `gateway` and return its result (the contract's
    `CommandResult` as JSON), or None if none came within `wait_s`. A command sent
    again with the same `command_id` gets the first result again (the gateway
    deduplicates by id)."""
    command_id = command_id or new_command_id()
    root = f"{mqtt.topic_prefix}/{township}/{gateway}"
    reply = f"{root}/reply/{command_id}"
    answers: asyncio.Queue[InboundMessage] = asyncio.Queue()
    connection = MqttConnection(
        mqtt.model_copy(update={"session_expiry_s": 0}),  # this sender's session ends with it
        f"township-cmd-{secrets.token_hex(6)}",
        None,
        subscriptions=(reply,),
        on_message=answers.put_nowait,
    )
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    payload = orjson.dumps({"id": command_id, "args": args, "sent_at": sent_at}).decode()
    try:
        await connection.connect()
        await asyncio.to_thread(store.record_command, command_id, gateway, name, args, sent_at)
        accepted = await connection.publish(
            f"{root}/cmd/{name}",
            payload,
            correlation_data=command_id.encode(),
            response_topic=reply,
        )
        if not accepted:
            raise CommandNotSent("the broker refused the command (not authorised?)")
        result = await _answer(answers, command_id, wait_s)
    except MqttConnectionError as exc:
        raise CommandNotSent(str(exc)) from exc
    finally:
        await connection.disconnect()
    if result is not None:
        await asyncio.to_thread(store.record_result, gateway, result)
    return result


async def _answer(
    answers: asyncio.Queue[InboundMessage], command_id: str, wait_s: float
) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(wait_s):
            while True:
                inbound = await answers.get()
                inbound.ack()
                if inbound.correlation_data != command_id.encode():
                    continue
                try:
                    result = CommandResult.model_validate_json(inbound.payload)
                except ValidationError:
                    continue
                if result.id == command_id:
                    answer: dict[str, Any] = orjson.loads(inbound.payload)
                    return answer
    except TimeoutError:
        return None
