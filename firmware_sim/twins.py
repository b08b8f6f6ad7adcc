"""The simulated twin of a device kind: the class `drivers/kinds.py` names for it."""

from __future__ import annotations

import importlib

from drivers.kinds import DeviceKind


def twin_class(kind: DeviceKind, base: type) -> type:
    """The twin class of `kind`, which must be a subclass of `base` (usually abstract,
    so callers cast the result); ValueError if it is not."""
    module_name, _, class_name = kind.twin.partition(":")
    twin = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(twin, type) and issubclass(twin, base)):
        raise ValueError(f"{kind.name}: twin {kind.twin} is not a {base.__name__}")
    return twin
