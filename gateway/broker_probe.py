"""Waiting for a broker that could not be reached: a plain TCP connect to its port every
couple of seconds, so the uplink reconnects within seconds of the broker coming back
instead of sleeping out a long back-off.

A TCP connect is cheap for both sides (no TLS, no MQTT session), and it is made only
while the broker is unreachable. Once it answers, a random pause keeps the gateways of a
township, which lost the broker together, from all connecting in the same second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

#: Seconds between the starts of two probes (each also gives up after this long).
PROBE_INTERVAL_S = 2.0
#: The random pause, in seconds, between the broker answering and connecting to it.
JITTER_S = (0.0, 3.0)


async def broker_answers(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP connection to `host:port` opens within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):  # the broker closing first is an answer too
        await writer.wait_closed()
    return True


async def wait_for_broker(host: str, port: int, longest_s: float) -> None:
    """Return after `longest_s`, or sooner: a random `JITTER_S` after the broker's port
    first answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + longest_s
    while (left := deadline - loop.time()) > 0:
        started = loop.time()
        if await broker_answers(host, port, min(PROBE_INTERVAL_S, left)):
            await asyncio.sleep(min(random.uniform(*JITTER_S), max(0.0, deadline - loop.time())))
            return
        await asyncio.sleep(max(0.0, min(started + PROBE_INTERVAL_S, deadline) - loop.time()))
