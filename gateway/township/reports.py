"""Plain-text reports from the township's database, for a server team to read: the
gateways and their state, the seq gaps still open, the active alerts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from gateway.township.store import TownshipStore, alerts, gateways, seq_gaps


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned on the widest cell; `-` for nothing."""
    cells = [list(headers), *([_text(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def gateways_report(store: TownshipStore) -> str:
    gaps = (
        sa.select(
            seq_gaps.c.gateway,
            sa.func.count().label("gaps"),
            sa.func.sum(seq_gaps.c.to_seq - seq_gaps.c.from_seq + 1).label("missing"),
        )
        .group_by(seq_gaps.c.gateway)
        .subquery()
    )
    active = (
        sa.select(alerts.c.gateway, sa.func.count().label("active"))
        .where(alerts.c.state != "cleared")
        .group_by(alerts.c.gateway)
        .subquery()
    )
    g = gateways.c
    query = (
        sa.select(
            g.id, g.township, g.state, g.status_at, g.last_message_at, g.max_seq,
            sa.func.coalesce(gaps.c.gaps, 0), sa.func.coalesce(gaps.c.missing, 0),
            sa.func.coalesce(active.c.active, 0),
        )
        .outerjoin(gaps, gaps.c.gateway == g.id)
        .outerjoin(active, active.c.gateway == g.id)
        .order_by(g.township, g.id)
    )  # fmt: skip
    headers = (
        "gateway", "township", "state", "state since", "last message", "highest seq",
        "open gaps", "missing", "active alerts",
    )  # fmt: skip
    return table(headers, store.rows(query))


def gaps_report(store: TownshipStore) -> str:
    s = seq_gaps.c
    query = sa.select(
        s.gateway, s.from_seq, s.to_seq, s.to_seq - s.from_seq + 1, s.opened_at
    ).order_by(s.gateway, s.from_seq)
    rows = store.rows(query)
    if not rows:
        return "no open gaps"
    return table(("gateway", "from seq", "to seq", "missing", "open since"), rows)


def alerts_report(store: TownshipStore) -> str:
    a = alerts.c
    query = (
        sa.select(
            a.gateway, a.subject, a.kind, a.severity, a.state, a.raised_at, a.updated_at,
            a.device, a.acknowledged_by, a.id,
        )
        .where(a.state != "cleared")
        .order_by(a.gateway, a.updated_ms)
    )  # fmt: skip
    rows = store.rows(query)
    if not rows:
        return "no active alerts"
    headers = (
        "gateway", "subject", "kind", "severity", "state", "raised at", "updated at",
        "device", "acknowledged by", "id",
    )  # fmt: skip
    return table(headers, rows)
