"""Stopping a task that runs bumble code."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_until_done(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` again until it has ended: Python 3.11's asyncio.wait_for, used
    throughout bumble, swallows a cancel that races with a result."""
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
