"""The one service API through which subjects, device bindings, isolations and alert
acknowledgements change at run time. The township's MQTT commands and the technician's
page call it; nothing else changes them.

Every change is validated as the configuration file is (same bounds, same one-line
errors), saved with its audit entry in one transaction (what, old, new, by which
channel, by whom: a role code, never a name), and only then takes effect in the rules
and the device registry, and is republished (`subjects`, `devices`). Subjects and
bindings are seeded from the configuration at first start; after that the store's copy
is the one that counts, and a configuration that says otherwise is logged, not applied.

Devices are bound and unbound at run time too (`bind_device`, `unbind_device`, and
`replace_device`, both in one step): served or stopped at once, and kept so across a
restart. A device bound at run time has its whole `[[devices]]` entry in its binding
record (key included: the store is the gateway's own, like the configuration file), so
it is served again after a restart though the configuration does not name it; a
configured device unbound stays unbound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from gateway.config import (
    CODE,
    Config,
    DeviceConfig,
    SubjectConfig,
    describe_errors,
    masked_entry,
)
from gateway.devices import DeviceExists, DeviceRegistry
from gateway.ledger import LedgerBook
from gateway.model import Alert, Binding, Isolation, Subject
from gateway.rules.engine import RuleEngine, UnknownAlert
from gateway.rules.registry import check_overrides
from gateway.rules.technical import GatewayAlarm, open_alarm_alerts
from gateway.sessions import DeviceSessions
from gateway.store import StoreThread
from gateway.subjects import (
    SubjectDirectory,
    binding_from_config,
    local_datetime,
    subject_from_config,
)

log = logging.getLogger(__name__)

#: The longest ledger range asked at once: two isolations' worth.
_LEDGER_MAX_DAYS = 31
#: What a device key becomes in the audit trail.


class Channel(StrEnum):
    """Where a change came from, for the audit trail."""

    CONFIG = "config"
    MQTT = "mqtt"
    WEB = "web"
    CLI = "cli"


class CareError(Exception):
    """A change refused; `code` is what the MQTT command result calls it."""

    code = "invalid"


class NotFound(CareError):
    code = "not_found"


class Conflict(CareError):
    code = "conflict"


class Invalid(CareError):
    code = "malformed"


def _role_code(by: str | None) -> str | None:
    if by is not None and not CODE.fullmatch(by):
        raise Invalid("by: a role code (letters, digits, - _ .), never a name")
    return by


class CareService:
    def __init__(
        self,
        config: Config,
        store: StoreThread,
        directory: SubjectDirectory,
        rules: RuleEngine,
        alarms: Sequence[GatewayAlarm],
        devices: DeviceRegistry,
        ledger: LedgerBook,
        sessions: DeviceSessions,
        commit_alert_changes: Callable[[list[Alert]], Awaitable[None]],
        on_changed: Callable[[], None],
        now: Callable[[], datetime],
    ) -> None:
        """`commit_alert_changes` saves and announces alert events in order with the
        rules' own (the pipeline's); `on_changed` republishes `subjects` and `devices`."""
        self._config = config
        self._store = store
        self._directory = directory
        self._rules = rules
        self._alarms = alarms
        self._devices = devices
        self._ledger = ledger
        self._sessions = sessions
        #: The devices whose `[[devices]]` entry the store holds (bound at run time),
        #: by device id: their binding records carry it.
        self._entries: dict[str, DeviceConfig] = {}
        #: Held while a device is bound or unbound: a second one checks what the first
        #: did (its save is awaited before it takes effect).
        self._binding = asyncio.Lock()
        self._commit_alert_changes = commit_alert_changes
        self._on_changed = on_changed
        self._now = now
        #: Codes of the subjects isolated when `watch_isolations` last looked.
        self._isolated: set[str] = set()

    # --- start-up ----------------------------------------------------------------------

    async def load(self) -> None:
        """Take the subjects and bindings from the store; seed those the store does not
        have from the configuration (audited, channel `config`). Devices bound at run
        time are served again; configured devices unbound at run time are not."""
        store = self._store.store
        kept_subjects = {
            r["code"]: Subject.from_record(r) for r in await self._store.call(store.subjects)
        }
        kept_bindings = {r["device"]: r for r in await self._store.call(store.bindings)}
        tz = self._config.gateway.tz
        new_subjects: list[Subject] = []
        for entry in self._config.subjects:
            seeded = subject_from_config(entry, tz)
            kept = kept_subjects.get(entry.code)
            if kept is None:
                new_subjects.append(seeded)
                kept_subjects[entry.code] = seeded
            elif kept.record() != seeded.record():
                log.warning(
                    "subject differs from the configuration: the stored one is kept"
                    " (changes go through the service API)",
                    extra={"subject": entry.code},
                )
        new_bindings: list[Binding] = []
        bindings: list[Binding] = []
        for device in self._config.devices:
            record = kept_bindings.pop(device.device_id, None)
            if record is None:
                new_bindings.append(binding_from_config(device))
                bindings.append(new_bindings[-1])
            elif (binding := await self._load_configured(device, record)) is not None:
                bindings.append(binding)
        for record in kept_bindings.values():  # not configured: bound at run time
            if (binding := await self._load_bound_at_run_time(record)) is not None:
                bindings.append(binding)
        audit = [
            ("subject.created", _entry(s.code, None, s.record(), Channel.CONFIG, None))
            for s in new_subjects
        ] + [
            ("binding.created", _entry(b.device, None, _binding_record(b), Channel.CONFIG, None))
            for b in new_bindings
        ]
        if audit:
            await self._store.call(
                store.save_care_change,
                [s.record() for s in new_subjects],
                [_binding_record(b) for b in new_bindings],
                audit,
            )
        for subject in kept_subjects.values():
            self._directory.put_subject(subject)
        for binding in bindings:
            self._directory.put_binding(binding)
            self._devices.bind(binding.device, binding.subject)
        now = self._now()
        self._isolated = {s.code for s in self._directory.subjects() if s.isolated_at(now)}

    async def _load_configured(
        self, device: DeviceConfig, record: dict[str, Any]
    ) -> Binding | None:
        """A configured device the store has a binding of: None when it was unbound at
        run time (it stays so); served as its stored entry says when it was bound at
        run time."""
        if record.get("removed"):
            log.info(
                "configured device unbound at run time: not served",
                extra={"device": device.device_id},
            )
            await self._forget(device.device_id)
            return None
        stored = self._stored_device(record)
        if stored is not None and _device_entry(stored) != _device_entry(device):
            log.warning(
                "device configured differently: the stored entry is kept"
                " (changes go through the service API)",
                extra={"device": device.device_id},
            )
            await self._forget(device.device_id)
            await self._serve(stored)
        elif stored is not None:
            self._entries[device.device_id] = stored
        # Whom it measures comes from the store.
        binding = replace(binding_from_config(stored or device), subject=record.get("subject"))
        if binding.subject != device.subject:
            log.warning(
                "device bound differently in the configuration: the stored binding is"
                " kept (changes go through the service API)",
                extra={"device": binding.device},
            )
        return binding

    async def _load_bound_at_run_time(self, record: dict[str, Any]) -> Binding | None:
        """A device the configuration does not name: served again if it was bound at
        run time and is still bound."""
        stored = None if record.get("removed") else self._stored_device(record)
        if stored is None:
            return None
        try:
            await self._serve(stored)
        except DeviceExists as exc:  # the file now names another device at its address
            log.error(
                "stored device binding not served",
                extra={"device": stored.device_id, "error": str(exc)},
            )
            return None
        return binding_from_config(stored)

    # --- what changes -------------------------------------------------------------------

    async def set_subject(
        self,
        code: str,
        *,
        risk_grade: str | None = None,
        schedule: Sequence[dict[str, Any]] | None = None,
        thresholds: dict[str, dict[str, Any]] | None = None,
        channel: Channel,
        by: str | None = None,
    ) -> Subject:
        """Create a subject, or change its grade, schedule or thresholds (what is not
        given stays). Raises `Invalid` with the key and what is wrong."""
        by = _role_code(by)
        old = self._directory.subject(code)
        base = old or Subject(code)
        changes: dict[str, Any] = {"code": code, "risk_grade": risk_grade or base.risk_grade.value}
        changes["schedule"] = (
            list(schedule)
            if schedule is not None
            else [{"name": w.name, "start": w.start, "end": w.end} for w in base.schedule]
        )
        changes["thresholds"] = (
            thresholds
            if thresholds is not None
            else {t: dict(v) for t, v in base.thresholds.items()}
        )
        entry = _validated_subject(changes)
        try:
            check_overrides(self._config.rules, entry.thresholds, strict=False)
        except ValueError as exc:
            raise Invalid(f"thresholds.{exc}") from None
        new = replace(
            subject_from_config(entry, self._directory.timezone), isolation=base.isolation
        )
        return await self._save_subject(old, new, channel, by)

    async def start_isolation(
        self,
        code: str,
        *,
        start: datetime | None = None,
        days: int | None = None,
        channel: Channel,
        by: str | None = None,
    ) -> Subject:
        """Isolate a subject from `start` (default now) for `days` (default 14). Raises
        `Conflict` while an isolation of it is under way."""
        by = _role_code(by)
        now = self._now()
        old = self._directory.subject(code)
        base = old or Subject(code)
        if base.isolation is not None and base.isolated_at(now):
            raise Conflict(f"{code} is isolated already, until {base.isolation.end.isoformat()}")
        start_at = now if start is None else local_datetime(start, self._directory.timezone)
        entry = _validated_subject(
            {
                "code": code,
                "isolation_start": start_at,
                "isolation_days": 14 if days is None else days,
            }
        )
        new = replace(base, isolation=Isolation(start_at, entry.isolation_days))
        return await self._save_subject(old, new, channel, by, action="isolation.started")

    async def end_isolation(self, code: str, *, channel: Channel, by: str | None = None) -> Subject:
        """End a subject's isolation now. Raises `NotFound` for an unknown subject and
        `Conflict` when it is not isolated."""
        by = _role_code(by)
        now = self._now()
        old = self._directory.subject(code)
        if old is None:
            raise NotFound(f"no subject {code}")
        if old.isolation is None or not old.isolated_at(now):
            raise Conflict(f"{code} is not isolated")
        new = replace(old, isolation=replace(old.isolation, ended_at=now))
        return await self._save_subject(old, new, channel, by, action="isolation.ended")

    async def bind(
        self, device: str, subject: str | None, *, channel: Channel, by: str | None = None
    ) -> Binding:
        """Bind a configured device to `subject` (None: unbind it from any subject)."""
        by = _role_code(by)
        old = self._directory.binding(device)
        if old is None:
            raise NotFound(f"no device {device}")
        if subject is not None and not CODE.fullmatch(subject):
            raise Invalid(
                "subject: must be a bed or pseudonymous code (letters, digits, - _ .), never a name"
            )
        new = replace(old, subject=subject)
        if new == old:
            return old
        entry = self._entries.get(device)
        if entry is not None:
            entry = entry.model_copy(update={"subject": subject})
        old_record, new_record = _binding_record(old, entry), _binding_record(new, entry)
        await self._store.call(
            self._store.store.save_care_change,
            [],
            [new_record],
            [
                (
                    "binding.changed",
                    _entry(device, _masked(old_record), _masked(new_record), channel, by),
                )
            ],
        )
        if entry is not None:
            self._entries[device] = entry
        self._directory.put_binding(new)
        self._devices.bind(device, subject)
        self._on_changed()
        log.info(
            "device bound", extra={"device": device, "subject": subject, "channel": channel.value}
        )
        return new

    async def bind_device(
        self,
        device: DeviceConfig | Mapping[str, Any],
        *,
        channel: Channel,
        by: str | None = None,
    ) -> dict[str, Any]:
        """Bind a device not bound yet, from one `[[devices]]` entry (checked as the
        file's are when it is not a `DeviceConfig` already): served at once, kept across
        restarts. Returns its record as in `devices`. Raises `Invalid` naming the key,
        `Conflict` when it is bound already (or another device has its address)."""
        by = _role_code(by)
        if not isinstance(device, DeviceConfig):
            device = validated_device(device)
        async with self._binding:
            self._check_free(device)
            binding, record, audit = self._created(device, channel, by)
            await self._store.call(self._store.store.save_care_change, [], [record], [audit])
            return await self._put_bound(device, binding, channel)

    async def replace_device(
        self,
        old: str,
        device: DeviceConfig | Mapping[str, Any],
        *,
        channel: Channel,
        by: str | None = None,
    ) -> dict[str, Any]:
        """Bind a device in the place of device `old`, which is unbound: both saved and
        audited (`binding.removed`, `binding.created`) in one transaction, so a refused
        replacement leaves `old` bound, and the new device may have the old one's
        address (another kind, or the same device with a new key). Whom it measures is
        the caller's to give. Returns its record as in `devices`. Raises `NotFound` for
        `old`, and `Invalid` and `Conflict` as `bind_device` does."""
        by = _role_code(by)
        if not isinstance(device, DeviceConfig):
            device = validated_device(device)
        async with self._binding:
            removed, removal = self._removed(old, channel, by)
            self._check_free(device, replacing=old)
            binding, record, creation = self._created(device, channel, by)
            records = [record] if binding.device == old else [removed, record]
            await self._store.call(
                self._store.store.save_care_change, [], records, [removal, creation]
            )
            await self._forget(old)
            log.info("device unbound", extra={"device": old, "channel": channel.value})
            return await self._put_bound(device, binding, channel)

    def _check_free(self, device: DeviceConfig, *, replacing: str | None = None) -> None:
        """Raises `Conflict` when the device, or another at its address, is bound (but
        the one it replaces)."""
        bound = self._directory.binding(device.device_id)
        if bound is not None and device.device_id != replacing:
            raise Conflict(f"{device.device_id} is bound already")
        held = self._devices.get(device.address)
        if held is not None and held.id != replacing:
            raise Conflict(f"{device.address} is device {held.id}")

    def _created(
        self, device: DeviceConfig, channel: Channel, by: str | None
    ) -> tuple[Binding, dict[str, Any], tuple[str, dict[str, Any]]]:
        """A new binding, its record and its audit entry."""
        binding = binding_from_config(device)
        record = _binding_record(binding, device)
        return (
            binding,
            record,
            ("binding.created", _entry(binding.device, None, _masked(record), channel, by)),
        )

    async def _put_bound(
        self, device: DeviceConfig, binding: Binding, channel: Channel
    ) -> dict[str, Any]:
        """A binding saved takes effect: in the rules' bindings, served, republished."""
        self._directory.put_binding(binding)
        await self._serve(device)
        self._on_changed()
        log.info(
            "device bound",
            extra={"device": binding.device, "subject": binding.subject, "channel": channel.value},
        )
        return self._devices.record(binding.device)

    async def unbind_device(
        self, device: str, *, channel: Channel, by: str | None = None
    ) -> dict[str, Any]:
        """Unbind a device: its session stopped, gone from `devices`, and not served
        after a restart even if the configuration names it. Raises `NotFound`."""
        by = _role_code(by)
        async with self._binding:
            return await self._unbind_device(device, channel, by)

    async def _unbind_device(self, device: str, channel: Channel, by: str | None) -> dict[str, Any]:
        record, audit = self._removed(device, channel, by)
        await self._store.call(self._store.store.save_care_change, [], [record], [audit])
        await self._forget(device)
        self._on_changed()
        log.info("device unbound", extra={"device": device, "channel": channel.value})
        return {"device": device}

    def _removed(
        self, device: str, channel: Channel, by: str | None
    ) -> tuple[dict[str, Any], tuple[str, dict[str, Any]]]:
        """The record of a device unbound and its audit entry. Raises `NotFound`."""
        old = self._directory.binding(device)
        if old is None:
            raise NotFound(f"no device {device}")
        old_record = _binding_record(old, self._entries.get(device))
        record = {"device": device, "kind": old.kind, "subject": None, "removed": True}
        return record, ("binding.removed", _entry(device, _masked(old_record), record, channel, by))

    async def acknowledge(self, alert_id: str, by: str, *, channel: Channel) -> dict[str, Any]:
        """Someone with role code `by` has seen an open alert: it stays open, marked
        acknowledged. Raises `NotFound` when no open alert has that id, `Conflict`
        when it is acknowledged already."""
        if _role_code(by) is None:
            raise Invalid("by: a role code is needed")
        held = next((a for a in self.open_alerts() if a.id == alert_id), None)
        if held is None:
            raise NotFound(f"no open alert {alert_id}")
        if held.acknowledged_by is not None:
            raise Conflict(f"{alert_id} was acknowledged by {held.acknowledged_by}")
        at = self._now()
        try:
            event = self._rules.acknowledge(alert_id, by, at)
        except UnknownAlert:
            event = _acknowledged_by_alarm(self._alarms, alert_id, by, at)
        await self._commit_alert_changes([event])
        await self._store.call(
            self._store.store.audit,
            "alert.acknowledged",
            _entry(alert_id, None, {"acknowledged_by": by}, channel, by),
        )
        return event.payload()

    # --- what is read ------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        return [*self._rules.open_alerts(), *open_alarm_alerts(self._alarms)]

    def subjects_payload(self) -> list[dict[str, Any]]:
        """Every subject for the retained `subjects` message and the page."""
        now = self._now()
        return [{**s.record(), "isolated": s.isolated_at(now)} for s in self._directory.subjects()]

    async def ledger(self, subject: str, first: date, last: date) -> list[dict[str, Any]]:
        """The subject's ledger from `first` to `last` (local dates): the completed days
        as kept, and the days still in progress as they stand (windows `pending`)."""
        if self._directory.subject(subject) is None:
            raise NotFound(f"no subject {subject}")
        if last < first:
            raise Invalid("the date range ends before it starts")
        if (last - first).days > _LEDGER_MAX_DAYS:
            raise Invalid(f"at most {_LEDGER_MAX_DAYS} days at a time")
        kept = await self._store.call(
            self._store.store.ledger_days, subject, first.isoformat(), last.isoformat()
        )
        days = {day["date"]: day for day in kept}
        on = first
        while on <= last:
            if on.isoformat() not in days:
                with contextlib.suppress(LookupError):  # not held (older), or no thermometer
                    days[on.isoformat()] = {
                        "gateway": self._config.gateway.id,
                        **self._ledger.day(subject, on),
                    }
            on += timedelta(days=1)
        return [days[d] for d in sorted(days)]

    def watch_isolations(self, now: datetime) -> None:
        """Called every second: an isolation that ran out is republished at once (its
        end is news for the township), and the isolation rules stop by themselves."""
        isolated = {s.code for s in self._directory.subjects() if s.isolated_at(now)}
        if isolated != self._isolated:
            for code in self._isolated - isolated:
                log.info("isolation over", extra={"subject": code})
            self._isolated = isolated
            self._on_changed()

    # --- helpers -----------------------------------------------------------------------

    async def _serve(self, device: DeviceConfig) -> None:
        """A device whose entry the store holds: in the registry, then served."""
        self._devices.add(device)
        await self._sessions.add(device)
        self._entries[device.device_id] = device

    async def _forget(self, device: str) -> None:
        """A device no longer bound: its session stopped, out of the registry and the
        rules' bindings."""
        self._entries.pop(device, None)
        await self._sessions.remove(device)
        self._devices.remove(device)
        self._directory.remove_binding(device)

    def _stored_device(self, record: dict[str, Any]) -> DeviceConfig | None:
        """The device a binding record holds the entry of (None: a configured device's
        record, which holds whom it measures only). One that no longer passes the
        checks (a kind gone from the registry) is logged and not served."""
        entry = record.get("entry")
        if entry is None:
            return None
        try:
            return validated_device({**entry, "subject": record.get("subject")})
        except Invalid as exc:
            log.error(
                "stored device binding not served",
                extra={"device": record["device"], "error": str(exc)},
            )
            return None

    async def _save_subject(
        self,
        old: Subject | None,
        new: Subject,
        channel: Channel,
        by: str | None,
        action: str | None = None,
    ) -> Subject:
        if old is not None and old.record() == new.record():
            return old
        action = action or ("subject.created" if old is None else "subject.changed")
        await self._store.call(
            self._store.store.save_care_change,
            [new.record()],
            [],
            [(action, _entry(new.code, old.record() if old else None, new.record(), channel, by))],
        )
        self._directory.put_subject(new)
        self.watch_isolations(self._now())
        self._on_changed()
        log.info(
            "subject changed",
            extra={"subject": new.code, "action": action, "channel": channel.value},
        )
        return new


def _validated_subject(fields: dict[str, Any]) -> SubjectConfig:
    """Checked as a `[[subjects]]` table is; `Invalid` names the key."""
    try:
        return SubjectConfig.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise Invalid(describe_errors(exc.errors(), SubjectConfig)) from None


def validated_device(fields: Mapping[str, Any]) -> DeviceConfig:
    """Checked as a `[[devices]]` table is; `Invalid` names the key (never the value:
    it may be a key)."""
    try:
        return DeviceConfig.model_validate(dict(fields))
    except ValidationError as exc:
        raise Invalid(describe_errors(exc.errors(), DeviceConfig)) from None


def _binding_record(binding: Binding, device: DeviceConfig | None = None) -> dict[str, Any]:
    """What the store keeps of a binding; with `device` (bound at run time), its whole
    entry too, to serve it again after a restart."""
    record: dict[str, Any] = {
        "device": binding.device,
        "kind": binding.kind,
        "subject": binding.subject,
        "door_role": binding.door_role.value if binding.door_role else None,
        "report_interval_s": binding.report_interval_s,
    }
    if device is not None:
        record["entry"] = _device_entry(device)
    return record


def _device_entry(device: DeviceConfig) -> dict[str, Any]:
    """A device's `[[devices]]` entry but its subject (the binding record's): what finds
    and configures it, the key in hex."""
    entry: dict[str, Any] = {"kind": device.kind}
    if device.port is not None:
        entry["port"] = device.port
    else:
        entry["address"] = device.address
    if device.site is not None:
        entry["site"] = device.site.value
    if device.key is not None:
        entry["key"] = device.key.hex()
    if device.role is not None:
        entry["role"] = device.role.value
    if device.report_interval_s is not None:
        entry["report_interval_s"] = device.report_interval_s
    return entry


def _masked(record: dict[str, Any]) -> dict[str, Any]:
    """A binding record as the audit trail keeps it: the device key masked."""
    entry = record.get("entry")
    return record if entry is None else {**record, "entry": masked_entry(entry)}


def _entry(
    what: str, old: dict[str, Any] | None, new: dict[str, Any], channel: Channel, by: str | None
) -> dict[str, Any]:
    return {"what": what, "old": old, "new": new, "channel": channel.value, "by": by}


def _acknowledged_by_alarm(
    alarms: Iterable[GatewayAlarm], alert_id: str, by: str, at: datetime
) -> Alert:
    """The acknowledgement of `alert_id` by the alarm that holds it; KeyError if none."""
    for alarm in alarms:
        with contextlib.suppress(KeyError):
            return alarm.acknowledge(alert_id, by, at)
    raise KeyError(alert_id)
