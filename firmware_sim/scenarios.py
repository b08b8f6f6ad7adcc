"""What the simulated person's body does over time, independent of any protocol.

Each scenario is a pure function of seconds since the scenario started, so a device
simulator (BLE or serial) only has to encode what it is given.

- normal: SpO2 97-98 %, pulse ~72/min, 36.6 degC axillary
- fever: temperature 38.2 degC axillary, oximetry normal
- hypoxia: SpO2 falls to 89-90 % after 5 s and stays there
- probe_off: the finger leaves the probe after 3 s; values flagged, never valid lows
- drop_and_return: the device goes out of range from 5 s to 15 s, then comes back

Streaming oximeters also draw the pulse wave, `pulse_wave_at`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCENARIOS = ("normal", "fever", "hypoxia", "probe_off", "drop_and_return")


@dataclass(frozen=True, slots=True)
class OximeterSample:
    spo2: int
    pulse_rate: int
    perfusion_index: float
    probe_off: bool = False


@dataclass(frozen=True, slots=True)
class ThermometerSample:
    celsius: float


def check_scenario(name: str) -> str:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return name


def in_range(scenario: str, t: float) -> bool:
    """Whether the device can be reached (advertising / plugged in) at time t."""
    return not (scenario == "drop_and_return" and 5.0 <= t < 15.0)


def oximeter_at(scenario: str, t: float) -> OximeterSample:
    wobble = int(t) % 2  # a little natural variation, deterministic
    if scenario == "hypoxia" and t >= 5.0:
        return OximeterSample(spo2=89 + wobble, pulse_rate=104 + wobble, perfusion_index=2.1)
    if scenario == "probe_off" and t >= 3.0:
        # What a fingertip probe reports with no finger: a stale low-looking value,
        # flagged by the device. It must never raise a low-SpO2 alert.
        return OximeterSample(spo2=85, pulse_rate=0, perfusion_index=0.0, probe_off=True)
    return OximeterSample(spo2=97 + wobble, pulse_rate=72 + wobble, perfusion_index=4.5)


def thermometer_at(scenario: str, t: float) -> ThermometerSample:
    if scenario == "fever":
        return ThermometerSample(celsius=38.2)
    return ThermometerSample(celsius=36.6 + (0.1 if int(t) % 2 else 0.0))


def beats_at(scenario: str, t: float) -> float:
    """Heartbeats since the scenario started, counted at the pulse rate of second t;
    the fraction is the phase of the beat under way."""
    return t * oximeter_at(scenario, t).pulse_rate / 60


def pulse_wave_at(scenario: str, t: float) -> float:
    """The plethysmogram, 0-1: a fast systolic rise over the first 15 % of each beat and
    a slower fall; flat 0 with the probe off."""
    if oximeter_at(scenario, t).probe_off:
        return 0.0
    phase = beats_at(scenario, t) % 1.0
    if phase < 0.15:
        return math.sin(phase / 0.15 * math.pi / 2)
    return math.exp(-(phase - 0.15) * 3.5)
