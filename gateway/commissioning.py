"""What the technician's page asks of the running service to commission devices: the
devices heard nearby, strongest signal first, each with the kind it looks like
(`nearby`); a door sensor's key tried on an advertisement the sensor sent
(`check_key`); binding a device (`bind`) and binding one in another's place
(`replace`). Every change goes through the care service (`gateway/care.py`) on the
`web` channel: validated as the configuration is, audited, and served at once, without
a restart. Listening for the devices nearby is the sessions' job
(`DeviceSessions.discover`, which the page calls while its commissioning screen is
open); unbinding is the care service's own (`unbind_device`).

A key is checked before it is saved, by the kind's own decoder (the one the
advertisement listener then uses) on the last advertisement heard from that device: a
wrong key would otherwise show only later, as security rejections and no readings.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from drivers.errors import DecryptionFailed, DowngradedPacket, RefusedPacket
from drivers.kinds import KINDS, DeviceKind, KeyUse, Transport, shown_name
from gateway.care import CareService, Channel, Invalid, NotFound, validated_device
from gateway.config import DeviceConfig
from gateway.model import Binding
from gateway.sessions import DeviceSessions
from gateway.subjects import SubjectDirectory


class KeyProblem(StrEnum):
    """Why a key was refused against what the device sent, for the page to say."""

    NOT_HEARD = "not_heard"  # no advertisement heard from the device yet
    WRONG = "wrong"  # it does not decrypt the advertisement
    UNENCRYPTED = "unencrypted"  # the device sends in the clear: no key to give
    UNREADABLE = "unreadable"  # the advertisement cannot be read with (or without) it


class KeyRefused(Invalid):
    """A key (or its absence) refused against the device's last advertisement. The
    message starts with `key:`, as every `Invalid` starts with its field."""

    def __init__(self, problem: KeyProblem, message: str) -> None:
        super().__init__(f"key: {message}")
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Candidate:
    """A device heard nearby and not bound: what the page offers to bind."""

    address: str
    #: The kind it looks like (`drivers.kinds.classify_advertisement`'s guess).
    kind: str
    #: Its advertised name; None when it sent none, or when it is withheld
    #: (`drivers.kinds.shown_name`).
    name: str | None
    rssi: int | None
    seen_s_ago: int
    #: What a binding as `kind` takes: a key (none, optional, required), a site (a
    #: thermometer), a role (a door sensor).
    key: KeyUse
    site: bool
    role: bool
    #: The device id a binding as `kind` gives it.
    device_id: str


def strongest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Strongest signal first, those without one last; then by address."""
    return sorted(candidates, key=lambda c: (c.rssi is None, -(c.rssi or 0), c.address))


def takes_role(kind: DeviceKind) -> bool:
    """Door sensors have a role (what an opening means): the advertisement kinds, as
    the configuration's `role` check says."""
    return kind.transport is Transport.ADVERT


class Commissioning:
    def __init__(
        self, sessions: DeviceSessions, care: CareService, directory: SubjectDirectory
    ) -> None:
        self._sessions = sessions
        self._care = care
        self._directory = directory

    def nearby(self, *, within_s: float | None = None) -> list[Candidate]:
        """The devices heard that are not bound (only those heard in the last
        `within_s`, if given), strongest signal first."""
        candidates = []
        for row in self._sessions.discovered():
            kind = KINDS.get(row["kind"])
            if kind is None or (within_s is not None and row["seen_s_ago"] > within_s):
                continue
            candidates.append(
                Candidate(
                    address=row["address"],
                    kind=kind.name,
                    name=shown_name(row["name"], kind.name, bound=False),
                    rssi=row["rssi"],
                    seen_s_ago=row["seen_s_ago"],
                    key=kind.key,
                    site=kind.has_site,
                    role=takes_role(kind),
                    device_id=kind.device_id(row["address"]),
                )
            )
        return strongest_first(candidates)

    def check_key(self, address: str, kind: str, key_hex: str | None) -> None:
        """Raises `Invalid` (`key: ...`, one line) unless `key_hex` (None or '': no key)
        reads the last advertisement heard from `address` as a `kind`: not 32 hex
        digits, missing for a kind that always encrypts, or given for a kind without
        one, as the configuration says; and `KeyRefused` when no advertisement of the
        kind was heard from it yet, when the key does not decrypt it, or when the
        device sends in the clear. A key given for an unencrypted BTHome sensor is
        refused, not ignored: every clear packet would then be refused as a downgrade.
        Without a key (a BTHome sensor may send in the clear) nothing heard yet is no
        error, and what was heard must read without one. Kinds that do not advertise
        their readings (GATT, serial) have nothing to check."""
        entry: dict[str, Any] = {"kind": kind, "address": address}
        if key_hex is not None and key_hex.strip():
            entry["key"] = key_hex.strip()
        self._check_heard(validated_device(entry))

    async def bind(self, fields: Mapping[str, Any], *, by: str | None = None) -> dict[str, Any]:
        """Bind a device from one `[[devices]]` entry (as the configuration takes it),
        its key checked as `check_key` does. Returns its record as in `devices`.
        Raises `Invalid` naming the field, `Conflict` when it is bound already."""
        device = self._checked(fields)
        return await self._care.bind_device(device, channel=Channel.WEB, by=by)

    async def replace(
        self, old_device_id: str, fields: Mapping[str, Any], *, by: str | None = None
    ) -> dict[str, Any]:
        """Bind the device `fields` describes in the place of `old_device_id`, which is
        unbound in the same step (both audited): it measures the old one's subject,
        and takes its site, door role and report interval where its kind has them,
        unless `fields` gives them. A subject in `fields` other than the old one's is
        refused (that is a new binding). Refused, the old device stays bound. Returns
        the new device's record. Raises `NotFound` for `old_device_id`, `Invalid`,
        `Conflict` as `bind` does."""
        old = self._directory.binding(old_device_id)
        if old is None:
            raise NotFound(f"no device {old_device_id}")
        entry = {**self._carried(old, KINDS.get(str(fields.get("kind")))), **fields}
        if entry.get("subject") != old.subject:
            raise Invalid(
                f"subject: a replacement measures {old.subject or 'no subject'}, as"
                f" {old_device_id} did"
            )
        device = self._checked(entry)
        return await self._care.replace_device(old_device_id, device, channel=Channel.WEB, by=by)

    def _carried(self, old: Binding, kind: DeviceKind | None) -> dict[str, Any]:
        """What a replacement of kind `kind` takes over from the binding it replaces."""
        carried: dict[str, Any] = {"subject": old.subject}
        if kind is None:  # the kind is refused by the check that follows
            return carried
        served = next((d for d in self._sessions.devices if d.device_id == old.device), None)
        if kind.has_site and served is not None and served.site is not None:
            carried["site"] = served.site.value
        if takes_role(kind) and old.door_role is not None:
            carried["role"] = old.door_role.value
        if old.report_interval_s is not None:
            carried["report_interval_s"] = old.report_interval_s
        return carried

    def _checked(self, fields: Mapping[str, Any]) -> DeviceConfig:
        device = validated_device(fields)
        self._check_heard(device)
        return device

    def _check_heard(self, device: DeviceConfig) -> None:
        """The device's key (or none) tried on its last advertisement by a new decoder of
        its kind (a bound sensor's own decoder keeps its replay state untouched)."""
        kind = KINDS[device.kind]
        if kind.advert_decoder is None:
            return
        address, key = device.address, device.key
        heard = self._sessions.service_data(address)
        if heard is None or heard.uuid != kind.service_data_uuid:
            if key is None:
                return
            raise KeyRefused(
                KeyProblem.NOT_HEARD,
                f"no {kind.name} advertisement heard from {address} yet: bring it close"
                " (a door sensor: open and close the door), then try again",
            )
        when = f"heard from {address} {time.monotonic() - heard.heard_at:.0f} s ago"
        try:
            kind.advert_decoder(key, address).feed(heard.data, heard.heard_at)
        except DecryptionFailed:
            raise KeyRefused(
                KeyProblem.WRONG, f"does not decrypt the advertisement {when}: a wrong key"
            ) from None
        except DowngradedPacket:
            raise KeyRefused(
                KeyProblem.UNENCRYPTED,
                f"{address} sends its advertisements unencrypted: leave the key empty",
            ) from None
        except RefusedPacket as error:
            with_it = "without a key" if key is None else "with this key"
            raise KeyRefused(
                KeyProblem.UNREADABLE, f"the advertisement {when} cannot be read {with_it}: {error}"
            ) from None
