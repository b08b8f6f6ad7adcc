"""Delays between retries: exponential in the failures so far, capped, with jitter so
that devices (or gateways) that failed together do not retry together."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 1.0
    maximum: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row (0: right after a link
        was lost). Half of it fixed, half random."""
        ceiling = min(self.maximum, self.base * 2 ** min(failures, 32))
        return ceiling / 2 + random.uniform(0, ceiling / 2)
