"""The page answers only to the host names it is meant to have.

Without this check a web page elsewhere could read the gateway by DNS rebinding: its
own name, once the browser has loaded it, is pointed at the gateway's address, and
the browser then sends the page's requests there as "same origin", with that name in
the `Host` header. Such an attack needs a name, so any IP address is always allowed
(as are `localhost`, the machine's host name and `<hostname>.local`); any other name
must be in `web.allowed_hosts`.

Starlette's TrustedHostMiddleware has no rule for IP literals (every address the
gateway may get by DHCP would have to be listed) and answers with a bare "Invalid host
header"; this one is a small pure ASGI middleware that says which key to set.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

#: Longest host shown back in the refusal.
_SHOWN = 100


class AllowedHosts:
    """Refuses any request whose `Host` header is not allowed (or missing) before the
    app sees it: HTTP with a 400 saying why, a WebSocket by closing it."""

    def __init__(self, app: ASGIApp, names: Iterable[str] = ()) -> None:
        self.app = app
        hostname = _normal(socket.gethostname())
        self._names = frozenset(
            {"localhost", hostname, f"{hostname}.local", *(_normal(n) for n in names)}
        )

    def allowed(self, host_header: str) -> bool:
        """Whether a request with this `Host` header (`name`, `name:port`, an IPv4
        address, `[IPv6]`, each with or without a port) is answered."""
        host = _without_port(host_header.strip())
        if _is_ip(host):
            return True
        return _normal(host) in self._names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = [v for k, v in scope["headers"] if k == b"host"]
        if len(hosts) == 1:
            host = hosts[0].decode("latin-1")
            if self.allowed(host):
                await self.app(scope, receive, send)
                return
            why = f"{_printable(host)} is not one"
        else:
            why = "the request names no host" if not hosts else "the request names two hosts"
        if scope["type"] == "websocket":  # closed before it is accepted: a 403
            await send({"type": "websocket.close", "code": 1008})
            return
        await _refuse(
            send,
            f"this gateway answers only to its configured host names (web.allowed_hosts): {why}\n",
        )


def _normal(name: str) -> str:
    return name.lower().rstrip(".")


def _without_port(host: str) -> str:
    if host.startswith("["):  # [IPv6] or [IPv6]:port
        end = host.find("]")
        rest = host[end + 1 :]
        if end != -1 and (rest == "" or (rest[0] == ":" and rest[1:].isdigit())):
            return host[: end + 1]
        return host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def _is_ip(host: str) -> bool:
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if literal is host and ":" in host:
        return False  # an IPv6 address in a Host header is always bracketed
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        return False
    return True


def _printable(host: str) -> str:
    shown = "".join(c if c.isprintable() else "?" for c in host[:_SHOWN])
    return shown + ("..." if len(host) > _SHOWN else "")


async def _refuse(send: Send, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
