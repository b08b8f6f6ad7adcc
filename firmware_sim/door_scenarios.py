"""What the simulated ward's door does over time: pure functions of scenario seconds,
like `firmware_sim.scenarios` for the body.

- closed: the door never opens
- opens_and_closes: every 30 s the door opens at second 5 and closes at second 15
- left_open: the door opens at 5 s and stays open
"""

from __future__ import annotations

DOOR_SCENARIOS = ("closed", "opens_and_closes", "left_open")
_CYCLE_S = 30.0
_OPENS_AT_S = 5.0
_CLOSES_AT_S = 15.0


def check_door_scenario(name: str) -> str:
    if name not in DOOR_SCENARIOS:
        raise ValueError(
            f"unknown door scenario {name!r}; choose one of {', '.join(DOOR_SCENARIOS)}"
        )
    return name


def door_open_at(scenario: str, t: float) -> bool:
    if scenario == "opens_and_closes":
        return _OPENS_AT_S <= t % _CYCLE_S < _CLOSES_AT_S
    if scenario == "left_open":
        return t >= _OPENS_AT_S
    return False
