"""Commands from the township over MQTT: `<root>/cmd/<name>` in, a result on
`<root>/cmd/<name>/result` (and on the MQTT 5 response topic, with its correlation
data, when the command names one), an entry on `<root>/audit`.

- **Validated** first: a payload that is not JSON, too large, without an `id`, with
  fields the contract does not know, or with `args` that do not fit the command's
  schema is answered `malformed` (with `id` null when none could be read) and changes
  nothing. Types are never coerced (`"14"` is not a number of days).
- **Idempotent by id**: the result of each command is kept under its id; a repeated
  id gets the kept result again and changes nothing.
- **Not stale**: a command whose `sent_at` is older than `commands.max_age_s` (or than
  its own MQTT 5 message expiry) is refused as `expired`: a week-old "unbind" must not
  fire. The broker itself drops a message whose expiry ran out while queued.
- Everything that changes state goes through the care service (gateway/care.py), the
  API the page will use too. Every command, applied or refused, is audited in the store
  and published on `audit`, in one transaction with its result.
- The message is acknowledged to the broker only once its result is recorded: a
  command received as the gateway dies is delivered again, and answered from the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gateway import __version__
from gateway.care import CareError, CareService, Channel, Invalid, NotFound
from gateway.config import CODE, Config, DeviceConfig, describe_errors, masked_entry
from gateway.mqtt_connection import InboundMessage
from gateway.store import StoreThread

log = logging.getLogger(__name__)

#: Larger payloads are refused unread: no command needs more than a few kB.
MAX_PAYLOAD_BYTES = 64 * 1024
#: The most readings one `resend` may ask for (a day of 6 devices at 3 metrics/s is
#: 1.6 million; a server that lost more asks in parts).
MAX_RESEND = 2_000_000

#: A subject or role code, never a name.
Code = Annotated[str, Field(pattern=CODE.pattern)]


class CommandError(Exception):
    """A command refused before it reached the care service."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Envelope(_Closed):
    """What every `cmd/<name>` payload is."""

    id: str = Field(min_length=1, max_length=128)
    args: dict[str, Any] = Field(default_factory=dict)
    sent_at: AwareDatetime | None = None


class NoArgs(_Closed):
    pass


class UnbindArgs(_Closed):
    device: str = Field(min_length=1, max_length=80)


class SetSubjectArgs(_Closed):
    subject: Code
    risk_grade: Literal["green", "yellow", "red"] | None = None
    schedule: list[dict[str, Any]] | None = None
    thresholds: dict[str, dict[str, Any]] | None = None


class StartIsolationArgs(_Closed):
    subject: Code
    start: AwareDatetime | None = None
    days: int | None = Field(default=None, ge=1, le=60)


class SubjectArgs(_Closed):
    subject: Code


class AckArgs(_Closed):
    alert: str = Field(min_length=1, max_length=200)
    by: Code


class ResendArgs(_Closed):
    from_seq: int = Field(ge=1)
    to_seq: int = Field(ge=1)


class LedgerArgs(_Closed):
    subject: Code
    from_: date = Field(alias="from")
    to: date


Handler = Callable[[Any], Awaitable[dict[str, Any]]]
#: Turns a command's `args` into what its handler takes; raises `CommandError`.
Parser = Callable[[dict[str, Any]], Any]


def _parser(model: type[BaseModel]) -> Parser:
    def parse(args: dict[str, Any]) -> Any:
        try:  # from JSON text: strict types, dates and times from their ISO strings
            return model.model_validate_json(json.dumps(args))
        except ValidationError as exc:
            raise CommandError("malformed", describe_errors(exc.errors(), model)) from None

    return parse


class CommandProcessor:
    """Takes the messages the uplink receives on `cmd/+` and answers each."""

    def __init__(
        self,
        config: Config,
        store: StoreThread,
        care: CareService,
        devices: Callable[[], list[DeviceConfig]],
        reply: Callable[[str, str, bytes | None], None],
        on_queued: Callable[[], None],
        requeued: Callable[[], None],
        now: Callable[[], datetime],
    ) -> None:
        """`devices`: the devices served now (for `get_config`);
        `reply(topic, payload, correlation)` answers on a response topic;
        `on_queued` wakes the uplink for the result and audit messages; `requeued`
        tells it readings were marked undelivered again."""
        self._config = config
        self._store = store
        self._care = care
        self._devices = devices
        self._reply = reply
        self._on_queued = on_queued
        self._requeued = requeued
        self._now = now
        self._prefix = f"{config.topic_root}/cmd/"
        self._inbox: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._handlers: dict[str, tuple[Parser, Handler]] = {
            "ping": (_parser(NoArgs), self._ping),
            # One `[[devices]]` entry: the care service checks it as the file's are.
            "bind_device": (dict, self._bind_device),
            "unbind_device": (_parser(UnbindArgs), self._unbind_device),
            "set_subject": (_parser(SetSubjectArgs), self._set_subject),
            "start_isolation": (_parser(StartIsolationArgs), self._start_isolation),
            "end_isolation": (_parser(SubjectArgs), self._end_isolation),
            "ack_alert": (_parser(AckArgs), self._ack_alert),
            "resend": (_parser(ResendArgs), self._resend),
            "get_ledger": (_parser(LedgerArgs), self._get_ledger),
            "get_config": (_parser(NoArgs), self._get_config),
        }

    @property
    def names(self) -> list[str]:
        return list(self._handlers)

    def receive(self, message: InboundMessage) -> None:
        """Called by the uplink on the event loop for each message on `cmd/+`."""
        self._inbox.put_nowait(message)

    async def run(self) -> None:
        """Answer the commands in the order they arrive (a supervised part)."""
        while True:
            message = await self._inbox.get()
            await self.answer(message)

    async def answer(self, message: InboundMessage) -> dict[str, Any]:
        """Handle one message, record its result and audit entry, acknowledge it."""
        name = message.topic.removeprefix(self._prefix)
        command_id: str | None = None
        args: dict[str, Any] = {}
        try:
            envelope = self._envelope(message)
            command_id, args = envelope.id, envelope.args
            kept = await self._store.call(self._store.store.command_result, command_id)
            if kept is not None:  # answered before: the same answer, nothing done
                await self._store.call(
                    self._store.store.queue_messages, [(f"cmd/{kept['command']}/result", kept)]
                )
                message.ack()
                self._on_queued()
                self._answer_on_response_topic(message, kept)
                log.info("command repeated", extra={"command": name, "id": command_id})
                return kept
            self._check_age(envelope)
            result, error = await self._run(name, args), None
        except CommandError as exc:
            result, error = None, {"code": exc.code, "message": str(exc)}
        except CareError as exc:
            result, error = None, {"code": exc.code, "message": str(exc)}
        answer = {
            "id": command_id,
            "command": name,
            "ok": error is None,
            "error": error,
            "result": result,
            "at": self._now().isoformat(timespec="milliseconds"),
        }
        audit = {
            "gateway": self._config.gateway.id,
            "id": command_id,
            "command": name,
            "args": masked_entry(args),
            "ok": error is None,
            "error": error,
            "at": answer["at"],
            "channel": Channel.MQTT.value,
        }
        await self._store.call(
            self._store.store.record_command,
            answer,
            audit,
            [(f"cmd/{name}/result", answer), ("audit", audit)],
        )
        message.ack()
        self._on_queued()
        self._answer_on_response_topic(message, answer)
        log.info(
            "command",
            extra={"command": name, "id": command_id, "ok": error is None, "error": error},
        )
        return answer

    # --- checks ------------------------------------------------------------------------

    def _envelope(self, message: InboundMessage) -> Envelope:
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            raise CommandError("malformed", f"larger than {MAX_PAYLOAD_BYTES} bytes")
        try:
            return Envelope.model_validate_json(message.payload)
        except ValidationError as exc:
            error = exc.errors()[0]
            if error["type"] == "json_invalid":
                raise CommandError("malformed", "not JSON") from None
            raise CommandError("malformed", describe_errors(exc.errors(), Envelope)) from None

    def _check_age(self, envelope: Envelope) -> None:
        if envelope.sent_at is None:
            return
        limit = self._config.commands.max_age_s
        age = (self._now() - envelope.sent_at).total_seconds()
        if age > limit:
            raise CommandError(
                "expired", f"sent {timedelta(seconds=int(age))} ago; at most {limit:g} s"
            )

    async def _run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        entry = self._handlers.get(name)
        if entry is None:
            raise CommandError(
                "unknown_command", f"{name!r} is not one of {', '.join(self._handlers)}"
            )
        parse, handler = entry
        return await handler(parse(args))

    def _answer_on_response_topic(self, message: InboundMessage, answer: dict[str, Any]) -> None:
        if message.response_topic:
            payload = json.dumps(answer, separators=(",", ":"), ensure_ascii=False)
            self._reply(message.response_topic, payload, message.correlation_data)

    # --- the commands ------------------------------------------------------------------

    async def _ping(self, _: NoArgs) -> dict[str, Any]:
        return {
            "gateway": self._config.gateway.id,
            "version": __version__,
            "time": self._now().isoformat(timespec="milliseconds"),
        }

    async def _bind_device(self, device: dict[str, Any]) -> dict[str, Any]:
        return await self._care.bind_device(device, channel=Channel.MQTT)

    async def _unbind_device(self, args: UnbindArgs) -> dict[str, Any]:
        return await self._care.unbind_device(args.device, channel=Channel.MQTT)

    async def _set_subject(self, args: SetSubjectArgs) -> dict[str, Any]:
        await self._care.set_subject(
            args.subject,
            risk_grade=args.risk_grade,
            schedule=args.schedule,
            thresholds=args.thresholds,
            channel=Channel.MQTT,
        )
        return self._subject_entry(args.subject)

    async def _start_isolation(self, args: StartIsolationArgs) -> dict[str, Any]:
        await self._care.start_isolation(
            args.subject, start=args.start, days=args.days, channel=Channel.MQTT
        )
        return self._subject_entry(args.subject)

    async def _end_isolation(self, args: SubjectArgs) -> dict[str, Any]:
        await self._care.end_isolation(args.subject, channel=Channel.MQTT)
        return self._subject_entry(args.subject)

    async def _ack_alert(self, args: AckArgs) -> dict[str, Any]:
        return await self._care.acknowledge(args.alert, args.by, channel=Channel.MQTT)

    async def _resend(self, args: ResendArgs) -> dict[str, Any]:
        if args.to_seq < args.from_seq:
            raise Invalid("to_seq: must be at least from_seq")
        if args.to_seq - args.from_seq + 1 > MAX_RESEND:
            raise Invalid(f"at most {MAX_RESEND} readings at a time")
        requeued = await self._store.call(
            self._store.store.requeue_readings, args.from_seq, args.to_seq
        )
        if requeued == 0:
            raise NotFound(f"no reading of {args.from_seq}-{args.to_seq} is kept (pruned?)")
        self._requeued()
        return {"requeued": requeued}

    async def _get_ledger(self, args: LedgerArgs) -> dict[str, Any]:
        return {"days": await self._care.ledger(args.subject, args.from_, args.to)}

    async def _get_config(self, _: NoArgs) -> dict[str, Any]:
        return effective_config(self._config, self._devices())

    def _subject_entry(self, code: str) -> dict[str, Any]:
        return next(s for s in self._care.subjects_payload() if s["code"] == code)


def effective_config(config: Config, devices: list[DeviceConfig]) -> dict[str, Any]:
    """The configuration in force, as JSON, secrets masked (device keys): the file's,
    with the devices served now (bound at run time included, unbound ones left out)."""
    raw = config.model_dump()
    raw["devices"] = [masked_entry(device.model_dump()) for device in devices]
    return json.loads(json.dumps(raw, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path | date | datetime):
        return str(value) if isinstance(value, Path) else value.isoformat()
    if hasattr(value, "isoformat"):  # a time of day
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
