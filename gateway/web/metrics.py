"""`/metrics`: the running gateway in the Prometheus text format, behind its own token.

The text is made by `gateway/web/metrics_text.py`, loaded on the first scrape.

The token is the stripped content of `web.metrics_token_file`, read again whenever the
file changes; no file configured, or an empty or unreadable one, and `/metrics`
answers 404, as any unknown path does.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Header, HTTPException, Response

if TYPE_CHECKING:
    from gateway.web.metrics_text import MetricsSource

log = logging.getLogger(__name__)


class _TokenFile:
    """The metrics token: the stripped content of a file, read again when it changes
    (inode, mtime or size). None while there is no usable token; a file that is empty
    or cannot be read is logged once each time it becomes so (never the token)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._read_as: tuple[int, int, int] | None = None
        self._token: str | None = None
        self._problem: str | None = None

    def current(self) -> str | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if key != self._read_as:
                self._token = self._path.read_text(encoding="utf-8").strip() or None
                self._read_as = key
            problem = None if self._token else "is empty"
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            self._token = self._read_as = None
            problem = f"cannot be read ({type(exc).__name__})"
        if problem != self._problem:
            self._problem = problem
            if problem:
                log.warning(
                    "metrics token file unusable: /metrics answers 404",
                    extra={"path": str(self._path), "problem": problem},
                )
        return self._token


def metrics_router(source: MetricsSource, token_path: Path | None) -> APIRouter:
    """GET /metrics with `Authorization: Bearer <token>`: 404 while no token is set
    (`token_path` None, or its file empty or unreadable), 401 for a missing or wrong
    token (compared in constant time)."""
    router = APIRouter()
    token = _TokenFile(token_path)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        expected = token.current()
        if expected is None:
            raise HTTPException(status_code=404)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()
        ):
            raise HTTPException(
                status_code=401,
                detail="a Bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        from gateway.web.metrics_text import CONTENT_TYPE, metrics_text

        return Response(metrics_text(source), media_type=CONTENT_TYPE)

    return router
