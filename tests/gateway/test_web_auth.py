"""The page's password file, logins, login rate limit, allowed host names, the
`set-password` command and TLS: each as a technician (or an attacker) meets it."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.broker import Mosquitto, free_port
from gateway.config import ConfigError, load_config
from gateway.service import GatewayService, _EmbeddedServer
from gateway.web.auth import LoginLimiter, PasswordFile, SessionBook
from gateway.web.hosts import AllowedHosts
from tests.certs import make_ca_and_server_cert
from tests.conftest import write_config
from tests.gateway.helpers import signed_in, until

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the password file -----------------------------------------------------------------


def test_the_password_is_kept_as_a_hash_only_its_owner_can_read(tmp_path: Path) -> None:
    path = tmp_path / "state" / "web-password"  # the folder is made
    passwords = PasswordFile(path)
    assert not passwords.is_set() and passwords.version == ""
    assert not passwords.verify(PASSWORD)
    passwords.set(PASSWORD)
    text = path.read_text()
    assert text.startswith("$argon2id$") and PASSWORD not in text
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["web-password"]  # no temporary left
    assert passwords.is_set() and passwords.version != ""
    assert passwords.verify(PASSWORD)
    assert not passwords.verify("correct horse battery!")
    assert not passwords.verify("")


def test_a_short_password_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "web-password"
    with pytest.raises(ValueError, match="at least 10 characters"):
        PasswordFile(path).set("123456789")
    assert not path.exists()
    PasswordFile(path).set(PASSWORD)
    before = path.read_text()
    with pytest.raises(ValueError):
        PasswordFile(path).set("short")
    assert path.read_text() == before and PasswordFile(path).verify(PASSWORD)


def test_a_password_set_by_another_process_counts_at_once(tmp_path: Path) -> None:
    """`set-password` on a running gateway: its PasswordFile sees the new hash."""
    path = tmp_path / "web-password"
    running = PasswordFile(path)
    PasswordFile(path).set(PASSWORD)
    assert running.verify(PASSWORD)
    first = running.version
    PasswordFile(path).set("another long password")
    assert running.verify("another long password") and not running.verify(PASSWORD)
    assert running.version not in ("", first)
    path.unlink()
    assert not running.is_set() and not running.verify("another long password")


def test_a_file_holding_no_hash_is_no_password(tmp_path: Path) -> None:
    """Someone writes the password itself into the file: it never logs anyone in."""
    path = tmp_path / "web-password"
    path.write_text(f"{PASSWORD}\n")
    passwords = PasswordFile(path)
    assert not passwords.is_set() and not passwords.verify(PASSWORD)


def test_a_hash_made_with_weaker_parameters_is_replaced_at_the_next_login(
    tmp_path: Path,
) -> None:
    path = tmp_path / "web-password"
    PasswordFile(path, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)).set(PASSWORD)
    assert "$m=8," in path.read_text()
    passwords = PasswordFile(path)
    old = passwords.version
    assert passwords.verify(PASSWORD)
    assert "$m=8," not in path.read_text() and passwords.version != old
    assert passwords.verify(PASSWORD) and path.stat().st_mode & 0o777 == 0o600


# --- sessions --------------------------------------------------------------------------


def test_a_session_ends_after_its_idle_time_and_each_request_restarts_it() -> None:
    clock = Clock()
    book = SessionBook(idle_s=900, monotonic=clock)
    session = book.open()
    assert len(session.token) >= 40 and len(session.csrf) >= 40
    assert session.token != session.csrf
    for _ in range(3):  # used every 10 minutes: stays open past its idle time
        clock.now += 600
        assert book.get(session.token) is session
    clock.now += 901
    assert book.get(session.token) is None
    clock.now -= 901  # gone for good, not merely hidden
    assert book.get(session.token) is None and len(book) == 0
    assert book.get(None) is None and book.get("") is None and book.get("guess") is None


def test_logout_ends_one_session_and_close_all_every_one() -> None:
    book = SessionBook(idle_s=900, monotonic=Clock())
    one, two, three = book.open(), book.open(), book.open()
    assert len({one.token, two.token, three.token}) == 3
    book.close(one.token)
    assert book.get(one.token) is None and book.get(two.token) is two
    book.close(one.token)  # twice: no error
    book.close_all()
    assert book.get(two.token) is None and book.get(three.token) is None


def test_the_book_is_bounded_and_drops_the_least_recently_used() -> None:
    book = SessionBook(idle_s=900, monotonic=Clock(), max_sessions=3)
    first, second, third = book.open(), book.open(), book.open()
    assert book.get(first.token) is first  # used: second is now the oldest
    fourth = book.open()
    assert len(book) == 3 and book.get(second.token) is None
    assert all(book.get(s.token) is s for s in (first, third, fourth))


def test_a_session_opened_under_another_password_is_refused() -> None:
    book = SessionBook(idle_s=900, monotonic=Clock())
    session = book.open(password_version="v1")
    assert book.get(session.token, password_version="v1") is session
    assert book.get(session.token, password_version="v2") is None
    assert book.get(session.token, password_version="v1") is None  # ended


def test_the_csrf_token_must_match_exactly() -> None:
    session = SessionBook(idle_s=900).open()
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None) and not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf[:-1])
    assert not session.csrf_matches(SessionBook(idle_s=900).open().csrf)


# --- the login rate limit --------------------------------------------------------------


def test_a_client_is_locked_out_after_its_attempts_and_the_wait_counts_down() -> None:
    clock = Clock()
    limiter = LoginLimiter(attempts=3, lockout_s=300, monotonic=clock)
    for _ in range(2):
        limiter.failed("192.168.1.50")
        assert limiter.retry_after("192.168.1.50") is None
    limiter.failed("192.168.1.50")
    assert limiter.retry_after("192.168.1.50") == 300
    assert limiter.retry_after("192.168.1.51") is None  # per client
    clock.now += 120
    assert limiter.retry_after("192.168.1.50") == 180
    clock.now += 180
    assert limiter.retry_after("192.168.1.50") is None
    limiter.failed("192.168.1.50")  # counting starts again
    assert limiter.retry_after("192.168.1.50") is None


def test_a_success_clears_the_count_and_old_failures_are_forgotten() -> None:
    clock = Clock()
    limiter = LoginLimiter(attempts=3, lockout_s=300, monotonic=clock)
    limiter.failed("a")
    limiter.failed("a")
    limiter.succeeded("a")
    limiter.failed("a")
    limiter.failed("a")
    assert limiter.retry_after("a") is None
    clock.now += 300  # those two are older than the window now
    limiter.failed("a")
    limiter.failed("a")
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") == 300


# --- allowed host names ----------------------------------------------------------------


@asynccontextmanager
async def serving(names: list[str]) -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny app behind AllowedHosts on a real uvicorn: its URL, and the hosts of the
    requests that reached the app."""
    reached: list[str] = []

    async def hello(request: Request) -> PlainTextResponse:
        reached.append(request.headers.get("host", ""))
        return PlainTextResponse("hello")

    app = AllowedHosts(Starlette(routes=[Route("/", hello)]), names)
    server = _EmbeddedServer(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done(), what="the server")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/", reached
    finally:
        server.should_exit = True
        await task


@pytest.mark.asyncio
async def test_the_page_answers_to_addresses_and_its_own_names_only() -> None:
    hostname = socket.gethostname()
    allowed = [
        "127.0.0.1",
        "127.0.0.1:8080",
        "192.168.1.20:8080",
        "[::1]:8080",
        "[fe80::1]",
        "localhost:8080",
        f"{hostname.upper()}:8080",
        f"{hostname}.local.",
        "gateway.river-town.example",
        "Gateway.River-Town.Example.:443",
    ]
    async with serving(["gateway.river-town.example"]) as (url, reached):
        async with httpx.AsyncClient() as web:
            for host in allowed:
                answer = await web.get(url, headers={"Host": host})
                assert (answer.status_code, answer.text) == (200, "hello"), host
            assert reached == allowed
            for host in ("evil.example", "evil.example:8080", "127.0.0.1.nip.io", "[evil]"):
                refused = await web.get(url, headers={"Host": host})
                assert refused.status_code == 400, host
                assert refused.headers["content-type"] == "text/plain; charset=utf-8"
                assert refused.text == (
                    "this gateway answers only to its configured host names"
                    f" (web.allowed_hosts): {host} is not one\n"
                )
            assert reached == allowed  # the app never saw them


@pytest.mark.asyncio
async def test_a_request_without_a_host_header_is_refused() -> None:
    async with serving([]) as (url, reached):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave it out
        answer = await reader.read()
        writer.close()
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 400")
        assert body.endswith(b"(web.allowed_hosts): the request names no host\n")
        assert reached == []


def test_allowed_can_be_asked_alone() -> None:
    hosts = AllowedHosts(Starlette(), ["pi.example."])
    assert hosts.allowed("PI.EXAMPLE:8080") and hosts.allowed("10.0.0.7")
    assert not hosts.allowed("pi.example.evil") and not hosts.allowed("pi.example:http")
    assert not hosts.allowed("::1")  # an IPv6 address is bracketed in a Host header
    assert not hosts.allowed("")


# --- set-password ----------------------------------------------------------------------


def gateway_toml(tmp_path: Path, web: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nid = "gw-1"\ntownship = "t"\ndata_dir = "data"\n\n[web]\n{web}\n')
    return path


def set_password(config: Path, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "set-password", "--config", str(config), *extra],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_set_password_from_stdin_stores_a_hash_beside_the_store(tmp_path: Path) -> None:
    result = set_password(gateway_toml(tmp_path), f"{PASSWORD}\n", "--stdin")
    stored = tmp_path / "data" / "web-password"
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"password stored in {stored} (as an argon2 hash); open logins have ended\n"
    )
    assert PASSWORD not in result.stdout + result.stderr and "$argon2" not in result.stdout
    assert PasswordFile(stored).verify(PASSWORD)
    assert stored.stat().st_mode & 0o777 == 0o600


def test_set_password_writes_where_web_password_file_says(tmp_path: Path) -> None:
    config = gateway_toml(tmp_path, 'password_file = "secrets/page-password"')
    assert set_password(config, f"{PASSWORD}\r\n", "--stdin").returncode == 0
    assert PasswordFile(tmp_path / "secrets" / "page-password").verify(PASSWORD)


@pytest.mark.parametrize(
    ("stdin", "extra", "message"),
    [
        ("too short\n", ("--stdin",), "the password must have at least 10 characters: nothing"),
        ("", ("--stdin",), "the password must have at least 10 characters: nothing changed"),
        (f"{PASSWORD}\n", (), "stdin is not a terminal: pass --stdin to read the password"),
    ],
)
def test_set_password_refusals_are_one_line_and_change_nothing(
    tmp_path: Path, stdin: str, extra: tuple[str, ...], message: str
) -> None:
    result = set_password(gateway_toml(tmp_path), stdin, *extra)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["gateway.toml"]


def test_set_password_says_where_it_cannot_write(tmp_path: Path) -> None:
    in_the_way = tmp_path / "data" / "web-password"
    in_the_way.mkdir(parents=True)
    result = set_password(gateway_toml(tmp_path), f"{PASSWORD}\n", "--stdin")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"cannot write {in_the_way}: Is a directory\n"
    assert [p.name for p in in_the_way.parent.iterdir()] == ["web-password"]


def test_set_password_with_a_bad_configuration_says_so(tmp_path: Path) -> None:
    result = set_password(gateway_toml(tmp_path, "session_idle_s = 5"), PASSWORD, "--stdin")
    assert result.returncode == 2
    assert result.stderr == "config error: web.session_idle_s: must be at least 60\n"


class Terminal:
    """`bedside-gateway set-password` on a pseudo-terminal, as typed by hand."""

    def __init__(self, config: Path) -> None:
        self._fd, child = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "set-password", "--config", str(config)],
            stdin=child,
            stdout=child,
            stderr=child,
            cwd=REPO,
            start_new_session=True,  # no terminal of ours: getpass uses this one
        )
        os.close(child)
        self.screen = ""

    def wait_for(self, text: str, within_s: float = 20.0) -> None:
        deadline = time.monotonic() + within_s
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on the terminal: {self.screen!r}"
            if select.select([self._fd], [], [], left)[0]:
                self._read()

    def type(self, line: str) -> None:
        os.write(self._fd, f"{line}\n".encode())

    def finish(self) -> int:
        """Everything it prints until it exits, and its exit status."""
        while self._read():
            pass
        os.close(self._fd)
        return self.process.wait(timeout=20)

    def _read(self) -> bool:
        try:
            chunk = os.read(self._fd, 4096)
        except OSError:  # EIO: the other side has closed
            return False
        self.screen += chunk.decode(errors="replace")
        return bool(chunk)


def test_set_password_asks_twice_on_a_terminal_without_showing_it(tmp_path: Path) -> None:
    terminal = Terminal(gateway_toml(tmp_path))
    terminal.wait_for("new password for the page: ")
    terminal.type(PASSWORD)
    terminal.wait_for("the same again: ")
    terminal.type(PASSWORD)
    assert terminal.finish() == 0, terminal.screen
    stored = tmp_path / "data" / "web-password"
    assert f"password stored in {stored}" in terminal.screen
    assert PASSWORD not in terminal.screen  # not echoed as it was typed
    assert PasswordFile(stored).verify(PASSWORD)


def test_set_password_on_a_terminal_refuses_two_different_passwords(tmp_path: Path) -> None:
    terminal = Terminal(gateway_toml(tmp_path))
    terminal.wait_for("new password for the page: ")
    terminal.type(PASSWORD)
    terminal.wait_for("the same again: ")
    terminal.type("correct horse battery staple")
    assert terminal.finish() == 2
    assert "the two passwords differ: nothing changed" in terminal.screen
    assert not (tmp_path / "data").exists()


# --- TLS -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_page_is_served_over_tls_with_its_certificate(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    tls = f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    service = GatewayService(load_config(write_config(tmp_path, mosquitto.port, extra=tls)))
    await service.start()
    try:
        assert service.web_url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(base_url=service.web_url, verify=trusted) as web:
            assert (await web.get("/healthz")).json() == {"status": "ok"}
        async with signed_in(service, verify=trusted) as web:  # its cookie never in clear
            (session,) = [c for c in web.cookies.jar if c.name == "bg_session"]
            assert session.secure
        async with httpx.AsyncClient(base_url=service.web_url) as web:  # the system's CAs
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await web.get("/healthz")
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_a_certificate_that_cannot_be_used_stops_the_start_naming_the_key(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    _, cert, key = make_ca_and_server_cert(tmp_path)
    swapped = f'tls_cert = "{key}"\ntls_key = "{cert}"\n'
    service = GatewayService(load_config(write_config(tmp_path, mosquitto.port, extra=swapped)))
    try:
        with pytest.raises(ConfigError, match=r"^web.tls_cert: .* are not a PEM certificate and"):
            await service.start()
    finally:
        await service.stop()
    tls = f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    config = load_config(write_config(tmp_path, mosquitto.port, extra=tls))
    cert.unlink()  # gone between check-config and the start
    service = GatewayService(config)
    try:
        with pytest.raises(ConfigError, match=f"^web.tls_cert: cannot read {cert}: No such file"):
            await service.start()
    finally:
        await service.stop()


def test_run_with_a_bad_certificate_ends_with_one_line(tmp_path: Path) -> None:
    _, cert, key = make_ca_and_server_cert(tmp_path)
    swapped = f'tls_cert = "{key}"\ntls_key = "{cert}"\n'
    config = write_config(tmp_path, free_port(), extra=swapped)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("config error: web.tls_cert: "), result.stderr
