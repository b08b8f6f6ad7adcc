"""Who may see the page: the gate in front of every route but `/healthz`, `/static/`
and `/metrics` (which has its own token), the login and logout forms, the language
switch, and the page that says how to set a password while none is set.

The session cookie is HttpOnly, SameSite=Strict, Secure when the page is served over
TLS. Every form of a signed-in page carries the session's CSRF token
(`checked_form`); the login form, before there is a session, carries a token that must
match a cookie set with it (double submit), so another site cannot sign a browser in.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.datastructures import FormData

from gateway.web.auth import LoginLimiter, PasswordFile, Session, SessionBook
from gateway.web.i18n import LANGUAGE_COOKIE, LOCALES
from gateway.web.render import Renderer

SESSION_COOKIE = "bg_session"
LOGIN_COOKIE = "bg_login"
#: Paths served to anyone: the liveness probe, the page's own script and style, and
#: /metrics, which checks its own bearer token.
_OPEN = ("/healthz", "/static/", "/metrics")
#: Paths served before signing in (once a password is set).
_BEFORE_LOGIN = ("/login", "/language")


class CsrfRefused(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=403, detail="csrf")


def local_path(target: str | None, default: str = "/") -> str:
    """A redirect target only within the gateway: '/x', never '//evil' or 'http://...'."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


class Gate:
    """The login state of the page: the password file, the open sessions, the limiter."""

    def __init__(
        self,
        passwords: PasswordFile,
        sessions: SessionBook,
        limiter: LoginLimiter,
        renderer: Renderer,
        *,
        setup_command: str,
    ) -> None:
        self.passwords = passwords
        self.sessions = sessions
        self.limiter = limiter
        self.renderer = renderer
        self.setup_command = setup_command

    def session(self, request: Request) -> Session | None:
        """The request's login; one opened under an earlier password (set-password on
        the running gateway) has ended. The page's own live updates (the event stream,
        the parts it fetches again) do not count as use: an open page left alone still
        signs out after `web.session_idle_s`."""
        return self.sessions.get(
            request.cookies.get(SESSION_COOKIE),
            self.passwords.version,
            touch=_by_a_person(request),
        )

    def still_open(self, session: Session) -> bool:
        """Whether `session` is still signed in (for the event stream it keeps open)."""
        return self.sessions.get(session.token, self.passwords.version, touch=False) is not None

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path.startswith(_OPEN):
            return await call_next(request)
        wants_json = path != "/api/docs" and path.startswith(("/api/", "/openapi.json", "/events"))
        if not self.passwords.is_set():
            if wants_json:
                return JSONResponse(
                    {"detail": f"no password is set: run `{self.setup_command}`"}, 503
                )
            return self.renderer.page(
                request, "setup.html", {"command": self.setup_command}, status_code=503
            )
        session = self.session(request)
        if session is None and path.startswith(_BEFORE_LOGIN):
            return await call_next(request)
        if session is None:
            if wants_json:
                return JSONResponse({"detail": "sign in first"}, 401)
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
        request.state.session = session
        return await call_next(request)

    async def checked_form(self, request: Request) -> FormData:
        """The posted form, once its CSRF token is the session's (else `CsrfRefused`)."""
        form = await request.form()
        session: Session | None = getattr(request.state, "session", None)
        token = form.get("csrf")
        if session is None or not session.csrf_matches(token if isinstance(token, str) else None):
            raise CsrfRefused()
        return form

    def set_session_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            httponly=True,
            samesite="strict",
            secure=self.renderer.secure,
            path="/",
        )


def _by_a_person(request: Request) -> bool:
    return request.url.path != "/events" and "x-live-parts" not in request.headers


def login_router(gate: Gate) -> APIRouter:
    router = APIRouter()
    render = gate.renderer

    def login_page(
        request: Request,
        *,
        error: str = "",
        status_code: int = 200,
        next_path: str = "/",
        retry_after: int | None = None,
    ) -> Response:
        """The form; `error`: "wrong", "locked" (for `retry_after` s), "expired". The
        browser's login token is kept while it has one, so a second tab (or a favicon
        request redirected here) does not make the first form's token stale."""
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response = render.page(
            request,
            "login.html",
            {"login_token": token, "error": error, "next": next_path, "retry_after": retry_after},
            status_code=status_code,
            headers={"Retry-After": str(retry_after)} if retry_after else None,
        )
        response.set_cookie(
            LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=render.secure
        )
        return response

    @router.get("/login")
    async def login_form(request: Request, next: str | None = None) -> Response:
        if getattr(request.state, "session", None) is not None or gate.session(request):
            return RedirectResponse(local_path(next), status_code=303)
        return login_page(request, next_path=local_path(next))

    @router.post("/login")
    async def login(
        request: Request,
        password: Annotated[str, Form(max_length=1024)] = "",
        login_token: Annotated[str, Form(max_length=100)] = "",
        next: Annotated[str, Form(max_length=2000)] = "/",
    ) -> Response:
        target = local_path(next)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, login_token):
            return login_page(request, error="expired", status_code=403, next_path=target)
        client = request.client.host if request.client else "?"
        # argon2 takes tens of ms and 64 MiB on purpose: off the event loop.
        if gate.limiter.retry_after(client) is None and not await asyncio.to_thread(
            gate.passwords.verify, password
        ):
            gate.limiter.failed(client)
            if gate.limiter.retry_after(client) is None:
                return login_page(request, error="wrong", status_code=401, next_path=target)
        wait = gate.limiter.retry_after(client)
        if wait is not None:
            return login_page(
                request,
                error="locked",
                status_code=429,
                next_path=target,
                retry_after=math.ceil(wait),
            )
        gate.limiter.succeeded(client)
        session = gate.sessions.open(gate.passwords.version)
        response = RedirectResponse(target, status_code=303)
        gate.set_session_cookie(response, session)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await gate.checked_form(request)
        gate.sessions.close(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/language")
    async def language(request: Request, to: str = "", next: str | None = None) -> Response:
        """The language switch: a preference, not a change of state, so a plain link."""
        response = RedirectResponse(local_path(next), status_code=303)
        if to in LOCALES:
            response.set_cookie(
                LANGUAGE_COOKIE,
                to,
                max_age=365 * 86400,
                samesite="lax",
                secure=render.secure,
                path="/",
            )
        return response

    return router
