"""The subjects and device bindings the rules consult (`SubjectDirectory`): who each
device measures, each subject's risk grade, isolation, schedule and thresholds, and
the local time zone. Built from the configuration (a replay, the first start) or from
the store (where the service keeps them, seeded from the configuration); changed at
run time only through the care service (`gateway/care.py`), which keeps it and the
store in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, tzinfo
from types import MappingProxyType
from typing import Any, TypeVar

from drivers.kinds import KINDS
from gateway.config import Config, DeviceConfig, SubjectConfig
from gateway.config_table import ConfigTable
from gateway.model import Binding, Isolation, Subject, Window
from gateway.rules.registry import RulesSection, apply_overrides

P = TypeVar("P", bound=ConfigTable)


def subject_from_config(entry: SubjectConfig, tz: tzinfo) -> Subject:
    isolation = None
    if entry.isolation_start is not None:
        isolation = Isolation(local_datetime(entry.isolation_start, tz), entry.isolation_days)
    return Subject(
        code=entry.code,
        risk_grade=entry.risk_grade,
        isolation=isolation,
        schedule=tuple(Window(w.name, w.start, w.end) for w in entry.schedule),
        thresholds=MappingProxyType(
            {table: MappingProxyType(dict(v)) for table, v in entry.thresholds.items()}
        ),
    )


def binding_from_config(device: DeviceConfig) -> Binding:
    return Binding(
        device=device.device_id,
        kind=device.kind,
        subject=device.subject,
        thermometer=KINDS[device.kind].has_site,
        door_role=device.role,
        report_interval_s=device.report_interval_s,
    )


def local_datetime(value: date | datetime, tz: tzinfo) -> datetime:
    """A TOML date (midnight), local date-time or offset date-time, in zone `tz`."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0))
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


class SubjectDirectory:
    """The `CareContext` of the rules (gateway/rules/base.py)."""

    def __init__(
        self,
        rules: RulesSection,
        timezone: tzinfo,
        subjects: Iterable[Subject] = (),
        bindings: Iterable[Binding] = (),
    ) -> None:
        self._rules = rules
        self._timezone = timezone
        self._subjects = {s.code: s for s in subjects}
        self._bindings = {b.device: b for b in bindings}
        #: Merged parameters by (table, subject): rules ask on every reading.
        self._params: dict[tuple[str, str | None], Any] = {}
        #: When each device was last heard (monotonic s): the service's device
        #: registry, which hears packets the pipeline never turns into readings.
        self.heard_by: Callable[[str], float | None] = lambda device: None

    @classmethod
    def from_config(cls, config: Config) -> SubjectDirectory:
        tz = config.gateway.tz
        return cls(
            config.rules,
            tz,
            (subject_from_config(s, tz) for s in config.subjects),
            (binding_from_config(d) for d in config.devices),
        )

    # --- what the rules ask --------------------------------------------------------------

    @property
    def timezone(self) -> tzinfo:
        return self._timezone

    def subject(self, code: str | None) -> Subject | None:
        """A subject named by a binding but never described is followed with the
        defaults (green, not isolated, the default schedule)."""
        if code is None:
            return None
        known = self._subjects.get(code)
        if known is not None:
            return known
        if any(b.subject == code for b in self._bindings.values()):
            return Subject(code)
        return None

    def subjects(self) -> list[Subject]:
        """Every subject described or bound to a device."""
        codes = dict.fromkeys([*self._subjects, *(b.subject for b in self._bindings.values())])
        return [s for code in codes if code and (s := self.subject(code)) is not None]

    def binding(self, device: str) -> Binding | None:
        return self._bindings.get(device)

    def bindings(self) -> list[Binding]:
        return list(self._bindings.values())

    def last_heard(self, device: str) -> float | None:
        return self.heard_by(device)

    def params(self, table: str, subject: str | None, base: P) -> P:
        key = (table, subject)
        cached = self._params.get(key)
        if cached is not None and cached[0] is base:
            return cached[1]
        merged = base
        known = self.subject(subject)
        if known is not None:
            merged = apply_overrides(
                merged, self._rules.profiles.get(known.risk_grade, {}).get(table, {})
            )
            merged = apply_overrides(merged, dict(known.thresholds.get(table, {})))
        self._params[key] = (base, merged)
        return merged

    # --- what the care service changes ---------------------------------------------------

    def put_subject(self, subject: Subject) -> None:
        self._subjects[subject.code] = subject
        self._params.clear()

    def put_binding(self, binding: Binding) -> None:
        self._bindings[binding.device] = binding
        self._params.clear()

    def remove_binding(self, device: str) -> None:
        """The device is no longer bound (unknown: nothing to do)."""
        if self._bindings.pop(device, None) is not None:
            self._params.clear()

    def described(self) -> Mapping[str, Subject]:
        """The subjects with a record of their own (not only named by a binding)."""
        return MappingProxyType(self._subjects)

    def local(self, at: datetime) -> datetime:
        return at.astimezone(self._timezone)
