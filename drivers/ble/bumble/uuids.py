"""bleak's form of the UUIDs bumble reports."""

from __future__ import annotations

import uuid

from bumble import core


def uuid_str(value: core.UUID | bytes) -> str:
    """bleak's UUID form (lower-case 128-bit) of a bumble UUID or its little-endian bytes."""
    if isinstance(value, bytes):
        value = core.UUID.from_bytes(value)
    return str(uuid.UUID(bytes=value.to_bytes(force_128=True)[::-1]))
