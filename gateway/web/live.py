"""What changed, for the open pages: the service says which part of its state moved
(`notify("alerts")`), each open page's event stream (`/events`, server-sent events)
hears the topics that moved, at most every `coalesce_s`, and the page fetches its
server-rendered content again. No reading or alert is carried in the events
themselves: the page shows what the server renders, in its language, behind its login.

Our own few lines rather than a broker library: the topics are a handful of names, the
listeners the pages open on one gateway (a few), and a slow page must never hold up the
service, so each listener keeps only the set of topics not yet sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from enum import StrEnum


class Topic(StrEnum):
    ALERTS = "alerts"
    READINGS = "readings"
    DEVICES = "devices"
    SUBJECTS = "subjects"
    STATUS = "status"
    NEARBY = "nearby"


class LiveEvents:
    def __init__(self, coalesce_s: float = 0.25) -> None:
        self._coalesce_s = coalesce_s
        self._listeners: set[_Listener] = set()
        self._closed = False

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def close(self) -> None:
        """The service stops: every stream of changes ends."""
        self._closed = True
        for listener in self._listeners:
            listener.wake.set()

    def notify(self, *topics: Topic) -> None:
        """Never blocks, from the event loop's thread."""
        for listener in self._listeners:
            listener.pending.update(topics)
            listener.wake.set()

    async def changes(self, quiet_s: float | None = None) -> AsyncIterator[list[str]]:
        """The topics that moved, sorted, each time some did (one listener per call);
        an empty list after `quiet_s` with none, so the caller can look around."""
        listener = _Listener()
        self._listeners.add(listener)
        try:
            while not self._closed:
                try:
                    await asyncio.wait_for(listener.wake.wait(), quiet_s)
                except TimeoutError:
                    yield []
                    continue
                if self._closed:
                    return
                await asyncio.sleep(self._coalesce_s)
                listener.wake.clear()
                topics, listener.pending = sorted(t.value for t in listener.pending), set()
                yield topics
        finally:
            self._listeners.discard(listener)


class _Listener:
    def __init__(self) -> None:
        self.pending: set[Topic] = set()
        self.wake = asyncio.Event()
