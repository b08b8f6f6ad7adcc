"""Pulse Oximeter Service 0x1822: Spot-check (0x2A5E), Continuous (0x2A5F), Features (0x2A60).

The two measurement characteristics number their flag bits differently; each parser
has its own flag names. Status bits become `Quality` flags; a measurement the device
itself calls unavailable or invalid yields no reading at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntFlag

from drivers.ble.fields import FieldReader
from drivers.errors import ImplausibleValue
from drivers.measurement import Measurement, Metric, Quality


class SpotCheckFlags(IntFlag):
    TIMESTAMP = 1 << 0
    MEASUREMENT_STATUS = 1 << 1
    DEVICE_SENSOR_STATUS = 1 << 2
    PULSE_AMPLITUDE_INDEX = 1 << 3
    DEVICE_CLOCK_NOT_SET = 1 << 4


class ContinuousFlags(IntFlag):
    SPO2PR_FAST = 1 << 0
    SPO2PR_SLOW = 1 << 1
    MEASUREMENT_STATUS = 1 << 2
    DEVICE_SENSOR_STATUS = 1 << 3
    PULSE_AMPLITUDE_INDEX = 1 << 4


class MeasurementStatus(IntFlag):
    ONGOING = 1 << 5
    EARLY_ESTIMATE = 1 << 6
    VALIDATED = 1 << 7
    FULLY_QUALIFIED = 1 << 8
    FROM_STORAGE = 1 << 9
    DEMONSTRATION = 1 << 10
    TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    UNAVAILABLE = 1 << 13
    QUESTIONABLE = 1 << 14
    INVALID = 1 << 15


class DeviceSensorStatus(IntFlag):
    EXTENDED_DISPLAY_UPDATE = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NON_PULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED = 1 << 11
    UNKNOWN_SENSOR = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTION = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


class PlxFeature(IntFlag):
    MEASUREMENT_STATUS = 1 << 0
    DEVICE_SENSOR_STATUS = 1 << 1
    SPOT_CHECK_STORAGE = 1 << 2
    SPOT_CHECK_TIMESTAMP = 1 << 3
    SPO2PR_FAST = 1 << 4
    SPO2PR_SLOW = 1 << 5
    PULSE_AMPLITUDE_INDEX = 1 << 6
    MULTIPLE_BONDS = 1 << 7


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    supported: PlxFeature
    #: Status bits the device can set; None when it does not report measurement status.
    measurement_status_support: MeasurementStatus | None
    device_sensor_status_support: DeviceSensorStatus | None


#: A measurement with any of these bits is not a reading at all.
NO_READING = MeasurementStatus.UNAVAILABLE | MeasurementStatus.INVALID

MEASUREMENT_QUALITY: dict[MeasurementStatus, Quality] = {
    MeasurementStatus.ONGOING: Quality.PROVISIONAL,
    MeasurementStatus.EARLY_ESTIMATE: Quality.PROVISIONAL,
    MeasurementStatus.FROM_STORAGE: Quality.FROM_STORAGE,
    MeasurementStatus.DEMONSTRATION: Quality.TEST_MODE,
    MeasurementStatus.TESTING: Quality.TEST_MODE,
    MeasurementStatus.CALIBRATION_ONGOING: Quality.TEST_MODE,
    MeasurementStatus.QUESTIONABLE: Quality.QUESTIONABLE,
}

DEVICE_QUALITY: dict[DeviceSensorStatus, Quality] = {
    DeviceSensorStatus.EQUIPMENT_MALFUNCTION: Quality.DEVICE_FAULT,
    DeviceSensorStatus.SIGNAL_PROCESSING_IRREGULARITY: Quality.POOR_SIGNAL,
    DeviceSensorStatus.INADEQUATE_SIGNAL: Quality.POOR_SIGNAL,
    DeviceSensorStatus.POOR_SIGNAL: Quality.POOR_SIGNAL,
    DeviceSensorStatus.LOW_PERFUSION: Quality.LOW_PERFUSION,
    DeviceSensorStatus.ERRATIC_SIGNAL: Quality.POOR_SIGNAL,
    DeviceSensorStatus.NON_PULSATILE_SIGNAL: Quality.POOR_SIGNAL,
    DeviceSensorStatus.QUESTIONABLE_PULSE: Quality.QUESTIONABLE,
    DeviceSensorStatus.SENSOR_INTERFERENCE: Quality.POOR_SIGNAL,
    DeviceSensorStatus.SENSOR_UNCONNECTED: Quality.PROBE_OFF,
    DeviceSensorStatus.UNKNOWN_SENSOR: Quality.DEVICE_FAULT,
    DeviceSensorStatus.SENSOR_DISPLACED: Quality.PROBE_OFF,
    DeviceSensorStatus.SENSOR_MALFUNCTION: Quality.DEVICE_FAULT,
    DeviceSensorStatus.SENSOR_DISCONNECTED: Quality.PROBE_OFF,
}


def parse_plx_spot_check(data: bytes) -> list[Measurement]:
    """0x2A5E -> SpO2, pulse rate and, when present, perfusion index (PAI), each flagged
    `spot_check`: one measurement taken on request, not a continuous sample."""
    reader = FieldReader(data, "PLX spot-check")
    flags = SpotCheckFlags(reader.uint(1, "Flags"))
    reader.what = f"PLX spot-check (flags 0x{flags:02X})"
    spo2 = reader.sfloat("SpO2")
    pulse = reader.sfloat("PR")
    measured_at = None
    if SpotCheckFlags.TIMESTAMP in flags:
        measured_at = reader.date_time("Timestamp")
    status = _optional_status(reader, SpotCheckFlags.MEASUREMENT_STATUS in flags)
    device = _optional_device_status(reader, SpotCheckFlags.DEVICE_SENSOR_STATUS in flags)
    pai = reader.sfloat("PAI") if SpotCheckFlags.PULSE_AMPLITUDE_INDEX in flags else None
    reader.end()
    extra = {Quality.SPOT_CHECK}
    if SpotCheckFlags.DEVICE_CLOCK_NOT_SET in flags:
        extra.add(Quality.DEVICE_CLOCK_UNSET)
    return _readings(reader.what, spo2, pulse, pai, status, device, extra, measured_at)


def parse_plx_continuous(data: bytes) -> list[Measurement]:
    """0x2A5F -> the normal SpO2 and pulse rate and, when present, perfusion index.

    The fast and slow SpO2/PR pairs are length-checked and skipped: the normal pair is
    what a device displays, and what the rules were written for.
    """
    reader = FieldReader(data, "PLX continuous")
    flags = ContinuousFlags(reader.uint(1, "Flags"))
    reader.what = f"PLX continuous (flags 0x{flags:02X})"
    spo2 = reader.sfloat("SpO2")
    pulse = reader.sfloat("PR")
    if ContinuousFlags.SPO2PR_FAST in flags:
        reader.take(4, "SpO2PR-Fast")
    if ContinuousFlags.SPO2PR_SLOW in flags:
        reader.take(4, "SpO2PR-Slow")
    status = _optional_status(reader, ContinuousFlags.MEASUREMENT_STATUS in flags)
    device = _optional_device_status(reader, ContinuousFlags.DEVICE_SENSOR_STATUS in flags)
    pai = reader.sfloat("PAI") if ContinuousFlags.PULSE_AMPLITUDE_INDEX in flags else None
    reader.end()
    return _readings(reader.what, spo2, pulse, pai, status, device, set(), None)


def parse_plx_features(data: bytes) -> PlxFeatures:
    """0x2A60 -> which optional fields and status bits the oximeter supports."""
    reader = FieldReader(data, "PLX Features")
    supported = PlxFeature(reader.uint(2, "Supported Features"))
    status = _optional_status(reader, PlxFeature.MEASUREMENT_STATUS in supported, " Support")
    device = _optional_device_status(
        reader, PlxFeature.DEVICE_SENSOR_STATUS in supported, " Support"
    )
    reader.end()
    return PlxFeatures(supported, status, device)


def _optional_status(
    reader: FieldReader, present: bool, suffix: str = ""
) -> MeasurementStatus | None:
    return MeasurementStatus(reader.uint(2, "Measurement Status" + suffix)) if present else None


def _optional_device_status(
    reader: FieldReader, present: bool, suffix: str = ""
) -> DeviceSensorStatus | None:
    if not present:
        return None
    return DeviceSensorStatus(reader.uint(3, "Device and Sensor Status" + suffix))


def _readings(
    what: str,
    spo2: float | None,
    pulse: float | None,
    pai: float | None,
    status: MeasurementStatus | None,
    device: DeviceSensorStatus | None,
    quality: set[Quality],
    measured_at: datetime | None,
) -> list[Measurement]:
    if status is not None:
        if status & NO_READING:
            return []
        quality |= {q for bit, q in MEASUREMENT_QUALITY.items() if bit in status}
    if device is not None:
        quality |= {q for bit, q in DEVICE_QUALITY.items() if bit in device}
    if spo2 is not None and not 0 <= spo2 <= 100:
        raise ImplausibleValue(f"{what}: implausible SpO2 {spo2} % (outside 0-100)")
    if pulse is not None and not 0 <= pulse <= 300:
        raise ImplausibleValue(f"{what}: implausible pulse rate {pulse} /min (outside 0-300)")
    if pai is not None and not 0 <= pai <= 100:
        raise ImplausibleValue(f"{what}: implausible PAI {pai} % (outside 0-100)")
    flags = frozenset(quality)
    values = ((Metric.SPO2, spo2), (Metric.PULSE_RATE, pulse), (Metric.PERFUSION_INDEX, pai))
    return [
        Measurement(metric, value, flags, measured_at=measured_at)
        for metric, value in values
        if value is not None
    ]
