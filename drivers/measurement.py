"""The vocabulary every parser speaks: what was measured, in which unit, how good it is.

A `Measurement` is the physical fact decoded from a device's bytes. The gateway adds the
identity (device, subject, sequence number, reading id, gateway time) when it accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Metric(StrEnum):
    SPO2 = "spo2"
    PULSE_RATE = "pulse_rate"
    PERFUSION_INDEX = "perfusion_index"
    BODY_TEMPERATURE = "body_temperature"
    DOOR_OPEN = "door_open"
    BATTERY = "battery"


#: UCUM unit of each metric; None for booleans.
UNITS: dict[Metric, str | None] = {
    Metric.SPO2: "%",
    Metric.PULSE_RATE: "/min",
    Metric.PERFUSION_INDEX: "%",
    Metric.BODY_TEMPERATURE: "Cel",
    Metric.DOOR_OPEN: None,
    Metric.BATTERY: "%",
}


class Quality(StrEnum):
    """Flags on a measurement. An empty set means a good, final value."""

    PROBE_OFF = "probe_off"  # sensor unconnected, disconnected or displaced; no finger
    LOW_PERFUSION = "low_perfusion"
    POOR_SIGNAL = "poor_signal"  # inadequate, poor, erratic or non-pulsatile signal
    QUESTIONABLE = "questionable"  # the device itself says the value is questionable
    PROVISIONAL = "provisional"  # measurement ongoing / early estimate
    DEVICE_FAULT = "device_fault"  # equipment or sensor malfunction, unknown sensor
    TEST_MODE = "test_mode"  # demonstration, testing or calibration data
    FROM_STORAGE = "from_storage"  # replayed from the device's memory, not live
    DEVICE_CLOCK_UNSET = "device_clock_unset"
    INTERMEDIATE = "intermediate"  # in-progress display value (thermometer 0x2A1E)
    #: One measurement taken on request (PLX spot-check 0x2A5E), not a continuous
    #: sample: the rules judge it on its own, not as part of a sustained stretch.
    SPOT_CHECK = "spot_check"


#: Flags that do not make a value unfit to raise a clinical alert on.
ALERTABLE_FLAGS = frozenset({Quality.FROM_STORAGE, Quality.DEVICE_CLOCK_UNSET, Quality.SPOT_CHECK})


class Site(StrEnum):
    """Where a temperature was taken. Thresholds differ per site; never convert."""

    AXILLARY = "axillary"
    BODY = "body"
    EAR = "ear"
    FINGER = "finger"
    GASTROINTESTINAL = "gastrointestinal"
    ORAL = "oral"
    RECTAL = "rectal"
    TOE = "toe"
    TYMPANIC = "tympanic"
    FOREHEAD = "forehead"


@dataclass(frozen=True, slots=True)
class Measurement:
    metric: Metric
    value: float | bool
    quality: frozenset[Quality] = field(default_factory=frozenset)
    site: Site | None = None
    #: Device clock, local time without zone, when the device sent one.
    measured_at: datetime | None = None

    @property
    def unit(self) -> str | None:
        return UNITS[self.metric]

    @property
    def alertable(self) -> bool:
        """True when the value may start or feed a clinical alert."""
        return self.quality <= ALERTABLE_FLAGS

    def as_json(self) -> dict[str, object]:
        """The decoded form printed by `bedside-gateway decode`."""
        out: dict[str, object] = {
            "metric": self.metric.value,
            "value": self.value,
            "unit": self.unit,
            "quality": sorted(q.value for q in self.quality),
        }
        if self.site is not None:
            out["site"] = self.site.value
        if self.measured_at is not None:
            out["measured_at"] = self.measured_at.isoformat()
        return out
