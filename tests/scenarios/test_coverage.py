"""The issue's table of alert kinds, row by row, as scenario timelines: every kind a
rule raises is raised and cleared in at least one scenario of this directory (which
tests/gateway/test_replay.py replays). `storage_failure` is the gateway's own alert on
its store, not a rule's: no replay raises it."""

from __future__ import annotations

import pytest

from gateway.model import AlertKind
from gateway.rules.registry import RULES
from tests.scenarios.build import load, scenario_files

#: A rule's kind is its table's name (`[rules.<kind>]`).
RULE_KINDS = [AlertKind(entry.table) for entry in RULES]


@pytest.mark.parametrize("kind", RULE_KINDS, ids=lambda k: k.value)
def test_every_kind_a_rule_raises_has_a_scenario_raising_and_clearing_it(
    kind: AlertKind,
) -> None:
    states = {
        event.state
        for path in scenario_files()
        for event in load(path).expected
        if event.kind == kind.value
    }
    assert {"raised", "cleared"} <= states, f"no scenario raises and clears {kind.value}"
