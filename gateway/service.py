"""The running gateway: builds every part from the configuration, starts them in order,
watches them, and stops them in reverse order.

Start order: store -> pipeline -> uplink -> web -> device sessions, so a device's first
reading always finds somewhere durable to go. Stop order is the reverse, and the
pipeline commits what it holds before the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from gateway import __version__, systemd
from gateway.care import CareService
from gateway.clock import ClockWatch, kernel_boot_id, kernel_clock_state
from gateway.clock_correction import ClockCorrection
from gateway.commands import CommandProcessor
from gateway.commissioning import Commissioning
from gateway.config import Config, ConfigError
from gateway.devices import ROUTINE_SAVE_EVERY_S, DeviceRegistry
from gateway.ledger import LedgerBook
from gateway.model import Alert, ClockState, Instant
from gateway.pipeline import Pipeline
from gateway.proxy_alarm import ProxyAlarm
from gateway.rules.engine import RuleEngine
from gateway.sessions import DeviceSessions
from gateway.storage_alarm import StorageAlarm
from gateway.store import QueueStats, StoreThread
from gateway.store_recovery import StoreRecovery
from gateway.subjects import SubjectDirectory
from gateway.supervision import Supervisor
from gateway.uplink import Uplink
from gateway.web.app import create_app
from gateway.web.live import LiveEvents, Topic

log = logging.getLogger(__name__)

_SUPERVISE_EVERY_S = 1.0
#: How long the page's server waits at stop for requests still running.
_WEB_SHUTDOWN_S = 2
_SIZE_CHECK_EVERY_S = 60.0
#: Counting the undelivered rows scans the backlog (tens of ms at a million rows), so
#: the queue figures on the page and in `status` are refreshed less often than 1 s.
_QUEUE_STATS_EVERY_S = 5.0
#: While a memory store stands in, how often to try the disk again.
_WRITE_BACK_EVERY_S = 5.0
#: Where the rules' timers are kept in the store's `rule_state`.
_RULE_STATE = "rules"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the service owns the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _check_tls(cert: Path, key: Path) -> None:
    """The page's certificate and key load together (uvicorn loads them again for each
    server it starts): a bad one is a configuration error at start, one line naming
    the key, instead of a page that never listens."""
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        try:
            path.open("rb").close()
        except OSError as exc:
            raise ConfigError(f"web.{name}: cannot read {path}: {exc.strerror}") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"web.tls_cert: {cert} and web.tls_key {key} are not a PEM certificate and its"
            f" private key ({exc.reason or exc})"
        ) from None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class GatewayService:
    def __init__(
        self,
        config: Config,
        *,
        now: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        clock_state: Callable[[], ClockState] = kernel_clock_state,
        boot: str | None = None,
    ) -> None:
        """`now` is the wall clock readings are stamped with and the rules tick on,
        `monotonic` the clock their durations are measured on, `clock_state` whether
        `now` is synchronised, `boot` the boot `monotonic` counts from (default: the
        kernel's); a test gives its own."""
        self.config = config
        self._now = now
        #: The clock durations are measured on (the rules', the page's logins).
        self.monotonic = monotonic
        self.started_at = datetime.now(UTC)
        boot = boot or kernel_boot_id()
        self.store = StoreThread(
            config.store.path,
            int(config.store.max_mb * 1024 * 1024),
            int(config.store.memory_max_mb * 1024 * 1024),
            unsynced=config.store.sync_interval_s > 0,
            boot=boot,
        )
        self.storage_alarm = StorageAlarm(
            config.gateway.id, timedelta(seconds=config.store.failure_clear_s)
        )
        self.proxy_alarm = ProxyAlarm(config.bluetooth.proxy_silent_s)
        #: Each proxy's (name, state, slots free, slots limit) as `status` last said them.
        self._proxies_published: list[tuple[str, str, int, int]] = []
        #: The store recovery (set-aside) already alerted on.
        self._alerted_recovery: StoreRecovery | None = None
        #: The faults (part, reason) as `status` last said them.
        self._faults_published: list[tuple[str, str]] = []
        #: What the open pages' traffic light and nearby list last showed.
        self._page_status: tuple[object, ...] = ()
        self._page_nearby: list[tuple[str, str, int | None]] = []
        self.devices = DeviceRegistry(config.devices, config.mqtt.status_interval_s, monotonic)
        self.clock = ClockWatch(clock_state)
        #: What changed, for the open pages (`/events`).
        self.live = LiveEvents()
        self.directory = SubjectDirectory.from_config(config)
        self.directory.heard_by = self.devices.heard_at
        self.rules = RuleEngine.configured(config.rules, self.directory)
        self.ledger_book = LedgerBook(self.directory, config.rules.missed_measurement)
        self.uplink = Uplink(
            config,
            self.store,
            self._status_payload,
            self.devices.records,
            lambda: self.care.subjects_payload(),
            on_command=lambda message: self.commands.receive(message),
        )
        self.pipeline = Pipeline(
            config,
            self.store,
            self.devices,
            self.rules,
            self.ledger_book,
            self.clock,
            on_committed=self._committed,
            on_alerts=self._alerts_changed,
            now=now,
            monotonic=monotonic,
            clock_correction=ClockCorrection(
                config.gateway.id,
                self.store,
                self.rules,
                (self.storage_alarm, self.proxy_alarm),
                boot,
            ),
        )
        self.sessions = DeviceSessions(config, self.pipeline)
        self.care = CareService(
            config,
            self.store,
            self.directory,
            self.rules,
            (self.storage_alarm, self.proxy_alarm),
            self.devices,
            self.ledger_book,
            self.sessions,
            commit_alert_changes=self.pipeline.commit_alert_changes,
            on_changed=self._care_changed,
            now=now,
        )
        self.commissioning = Commissioning(self.sessions, self.care, self.directory)
        #: The rules' timers as last saved (JSON text), so an unchanged state is not
        #: written again.
        self._saved_rule_state = ""
        self.commands = CommandProcessor(
            config,
            self.store,
            self.care,
            devices=lambda: self.sessions.devices,
            reply=self.uplink.reply,
            on_queued=self.uplink.wake,
            requeued=self.uplink.rewind,
            now=now,
        )
        self._queue = QueueStats(0, None, 0, 0, 0)
        #: The pipeline's counters (totals since start) as last added to the store.
        self._persisted_counters: dict[str, int] = {}
        self.supervisor = Supervisor()
        self._web: _EmbeddedServer | None = None
        self._app: FastAPI | None = None
        self.web_url = ""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        store = self.store.store
        await self.care.load()  # the devices bound, before their state is restored
        self.devices.restore(await self.store.call(store.devices))
        active = await self.store.call(store.active_alerts)
        self.rules.restore(active)
        for payload in active:
            self.storage_alarm.restore(Alert.from_payload(payload))
            self.proxy_alarm.restore(Alert.from_payload(payload))
        rule_state = await self.store.call(store.rule_state, _RULE_STATE)
        if rule_state:
            self.rules.load_state(rule_state.get("rules", {}), self._instant())
            self.ledger_book.load_state(rule_state.get("ledger", {}))
        await self.store.call(
            store.audit,
            "started",
            {"version": __version__, "config": str(self.config.source or ""), "pid": os.getpid()},
        )
        self._queue = await self.store.call(store.queue_stats)
        await self.pipeline.start()
        self.supervisor.start("pipeline", self.pipeline.run)
        self.supervisor.start("commands", self.commands.run)
        self.supervisor.start("uplink", self.uplink.run)
        await self._start_web()
        await self.sessions.start()
        self.supervisor.start("housekeeping", self._housekeeping)
        systemd.notify("READY=1")
        log.info(
            "gateway started",
            extra={"gateway": self.config.gateway.id, "web": self.web_url, "version": __version__},
        )

    async def stop(self) -> None:
        """Stop in reverse order. Each step runs even if one before it failed (a full
        disk must not keep the offline status from being published)."""
        systemd.notify("STOPPING=1")
        await self.supervisor.stop("housekeeping")
        await self.supervisor.stop("commands")  # one cut off is not acknowledged: sent again
        await self._stop_step("sessions", self.sessions.stop())
        self.pipeline.request_stop()
        await self.supervisor.stop("pipeline", cancel=False)
        await self._stop_step("saving device state", self._save_devices())
        await self._stop_step("saving the counters", self._save_counters())
        await self._stop_step("saving the rules' timers", self._save_rule_state())
        if self._web is not None:
            self._web.should_exit = True
        self.live.close()  # open pages' event streams end, so the server can
        await self.supervisor.stop("web", cancel=False)
        await self._stop_step("offline status", self.uplink.say_offline())
        await self.supervisor.stop("uplink")
        await self._stop_step("broker disconnect", self.uplink.close())
        await self._stop_step("closing the store", self.store.close())
        log.info("gateway stopped")

    async def _stop_step(self, what: str, step: Awaitable[None]) -> None:
        try:
            await step
        except Exception as exc:  # logged, and the next steps still run
            log.error(
                "stop step failed", extra={"step": what, "error": f"{type(exc).__name__}: {exc}"}
            )

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _start_web(self) -> None:
        """Start the page as a supervised part and wait until it listens; at start-up a
        page that cannot listen is a configuration error, said at once."""
        web = self.config.web
        if web.tls_cert is not None and web.tls_key is not None:
            _check_tls(web.tls_cert, web.tls_key)
        self.supervisor.start("web", self._serve_web)
        while self._web is None or not self._web.started:
            if any(f.part == "web" for f in self.supervisor.faults()):
                await self.supervisor.stop("web")
                raise RuntimeError(f"status page cannot listen on {web.listen}")
            await asyncio.sleep(0.01)
        sockets = [s for server in self._web.servers for s in server.sockets]
        host, port = sockets[0].getsockname()[:2]
        self.web_url = f"{'https' if web.tls else 'http'}://{host}:{port}/"

    async def _serve_web(self) -> None:
        """One uvicorn server on our loop, a new one after each failure (the same app:
        its logins and the login rate limit survive it); returns only when `stop` set
        `should_exit`."""
        web = self.config.web
        if self._app is None:
            self._app = create_app(self)
        server_config = uvicorn.Config(
            self._app,
            host=web.host,
            port=web.port,
            ssl_certfile=web.tls_cert,
            ssl_keyfile=web.tls_key,
            log_config=None,
            access_log=False,
            lifespan="off",
            # The page uses no WebSocket: not loading the library saves 0.6 MB.
            ws="none",
            # A request still running at stop (a page's event stream) is cut after this.
            timeout_graceful_shutdown=_WEB_SHUTDOWN_S,
        )
        self._web = _EmbeddedServer(server_config)
        await self._web.serve()
        if not self._web.should_exit:
            raise RuntimeError("the status page stopped serving")

    # --- supervision -----------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Tick the rules' clock, refresh health, persist device state, keep the store
        in bounds, and tell systemd's watchdog the gateway is alive: only while every
        supervised part runs (a dead part, a stuck loop or a hung store stops the pings,
        and systemd restarts the service)."""
        loop = asyncio.get_running_loop()
        next_size_check = next_queue_stats = loop.time()
        next_write_back = loop.time()
        next_counters_save = self.monotonic() + ROUTINE_SAVE_EVERY_S
        while True:
            self.clock.refresh()
            instant = self._instant()
            now = instant.wall
            self.pipeline.evaluate_clock(instant)
            self.care.watch_isolations(now)
            if self.store.fault is not None and loop.time() >= next_write_back:
                await self.store.write_back()
                next_write_back = loop.time() + _WRITE_BACK_EVERY_S
            self._watch_storage(now)
            self._watch_proxies(instant)
            if loop.time() >= next_queue_stats:
                await self._save_rule_state()
                await self.store.call(self.store.store.check_integrity_step)
                self._queue = await self.store.call(self.store.store.queue_stats)
                next_queue_stats = loop.time() + _QUEUE_STATS_EVERY_S
            if self.devices.take_changed():
                self.live.notify(Topic.DEVICES)
            if self.devices.take_save_due():
                await self._save_devices()
            if self.devices.take_inventory_due(loop.time()):
                self.uplink.devices_changed()
            if loop.time() >= next_size_check or self.store.fault is not None:
                evicted = await self.store.call(self.store.store.enforce_size_limit)
                if evicted:
                    log.error("store full: undelivered readings evicted", extra={"n": evicted})
                next_size_check = loop.time() + _SIZE_CHECK_EVERY_S
            if self.monotonic() >= next_counters_save:
                await self._save_counters()
                next_counters_save = self.monotonic() + ROUTINE_SAVE_EVERY_S
            faults = [(f.part, f.reason) for f in self.supervisor.faults()]
            if faults != self._faults_published:
                self._faults_published = faults
                self.uplink.status_changed()
            self._tell_pages()
            if self.supervisor.all_alive():
                systemd.notify("WATCHDOG=1")
            await asyncio.sleep(_SUPERVISE_EVERY_S)

    def _tell_pages(self) -> None:
        """The open pages' traffic light and nearby list, when what they show moved."""
        if not self.live.listeners:
            return
        health = self.health()
        status = (
            health["broker"]["state"],
            health["clock"],
            health["bluetooth"]["state"],
            [
                (p["name"], p["state"], p["slots_free"], p["slots_limit"], p["devices"])
                for p in health["bluetooth"].get("proxies", [])
            ],
            health["faults"],
            health["queue"]["undelivered"] > 0,
            health["queue"]["oldest_undelivered_at"],
        )
        if status != self._page_status:
            self._page_status = status
            self.live.notify(Topic.STATUS)
        nearby = [(d["address"], d["kind"], d["rssi"]) for d in health["discovered"]]
        if nearby != self._page_nearby:
            self._page_nearby = nearby
            self.live.notify(Topic.NEARBY)

    def _watch_storage(self, now: datetime) -> None:
        """Say when the store does not work: a fault in `status` and the page, and the
        `storage_failure` alert (raised, updated, cleared once it works again)."""
        recovery = self.store.recovery
        fault = self.store.fault
        if fault is not None:
            self.supervisor.report(
                "store",
                f"{fault}; readings are kept in memory until the disk takes writes again",
            )
            changes = self.storage_alarm.failing(fault, now)
        elif recovery is not None and recovery is not self._alerted_recovery:
            self.supervisor.resolve("store")
            changes = self.storage_alarm.failing(f"store set aside: {recovery.summary()}", now)
        else:
            self.supervisor.resolve("store")
            changes = self.storage_alarm.working(now)
        self._alerted_recovery = recovery
        self.pipeline.add_alert_changes(changes)

    def _watch_proxies(self, now: Instant) -> None:
        """The ESPHome proxies (only when configured, or an alert of one is still open):
        the `proxy_silent` alert, and `status` republished when a proxy's state or slots
        moved (the township sees a proxy drop without waiting for the next interval)."""
        if not self.config.bluetooth.proxies and not self.proxy_alarm.open_alerts():
            return
        proxies = self.sessions.adapter_health().get("proxies", [])
        self.pipeline.add_alert_changes(self.proxy_alarm.look(proxies, now))
        published = [(p["name"], p["state"], p["slots_free"], p["slots_limit"]) for p in proxies]
        if published != self._proxies_published:
            self._proxies_published = published
            self.uplink.status_changed()

    def _instant(self) -> Instant:
        """Now, on the wall clock and on the rules' duration clock (as readings are)."""
        return Instant(self._now(), self.monotonic())

    async def _save_rule_state(self) -> None:
        """Keep the rules' timers (a breach under way, a door open since...) and the
        ledger's days in progress across a restart: every 5 s while running, and at
        stop."""
        state = {
            "rules": self.rules.save_state(self._instant()),
            "ledger": self.ledger_book.save_state(),
        }
        text = json.dumps(state, sort_keys=True)
        if text != self._saved_rule_state:
            await self.store.call(self.store.store.save_rule_state, _RULE_STATE, state)
            self._saved_rule_state = text

    async def _save_devices(self) -> None:
        await self.store.call(self.store.store.save_devices, self.devices.records())

    async def _save_counters(self) -> None:
        """Add to the store's totals what the pipeline counted since the last save. They
        move with every reading, so this runs at most every `ROUTINE_SAVE_EVERY_S` (SD
        card wear, as for the devices' last values) and at stop: a clean restart loses
        none, a crash at most that much."""
        saved = self._persisted_counters
        totals = dict(self.pipeline.counters)  # what comes in during the save is the next's
        increments = {
            name: total - saved.get(name, 0)
            for name, total in totals.items()
            if total != saved.get(name, 0)
        }
        if not increments:
            return
        # Counted as saved before the save is awaited, and the save finishes even if
        # housekeeping is cancelled meanwhile (at stop): the stop's own save then adds
        # only what came after, never the same counts twice.
        self._persisted_counters = totals
        try:
            await asyncio.shield(self.store.call(self.store.store.add_counters, increments))
        except Exception:
            self._persisted_counters = saved
            raise

    def _alerts_changed(self, alerts: list[Alert]) -> None:
        self.uplink.alerts_changed()
        self.live.notify(Topic.ALERTS)

    def _committed(self) -> None:
        self.uplink.wake()
        self.live.notify(Topic.READINGS)

    def _care_changed(self) -> None:
        self.uplink.subjects_changed()
        self.live.notify(Topic.SUBJECTS, Topic.DEVICES)

    # --- what the page and `status` read ---------------------------------------------

    def health(self) -> dict[str, Any]:
        up = self.uplink.health
        q = self._queue
        return {
            "gateway": self.config.gateway.id,
            "township": self.config.gateway.township,
            "version": __version__,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "clock": self.clock.state.value,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "broker": {
                "url": self.config.mqtt.url,
                "state": up.state.value,
                "last_error": up.last_error,
                "connected_since": up.connected_since,
                "published_messages": up.published_messages,
                "rejected_messages": up.rejected_messages,
            },
            "queue": {
                "undelivered": q.undelivered,
                "oldest_undelivered_at": q.oldest_undelivered_at,
                "undelivered_alert_events": q.undelivered_alert_events,
                "store_bytes": q.db_bytes,
                "evicted_undelivered": q.evicted_undelivered,
            },
            "bluetooth": self.sessions.adapter_health(),
            "discovered": self.sessions.discovered(),
            "refused_packets": self.devices.refused_totals(),
            "faults": [fault.payload() for fault in self.supervisor.faults()],
            "restarts": self.supervisor.restarts(),
        }

    def device_records(self) -> list[dict[str, Any]]:
        return self.devices.records()

    async def active_alerts(self) -> list[dict[str, Any]]:
        return await self.store.call(self.store.store.active_alerts)

    async def recent_readings(self, limit: int, device: str | None) -> list[dict[str, Any]]:
        return await self.store.call(self.store.store.recent_readings, limit, device)

    def subjects(self) -> list[dict[str, Any]]:
        return self.care.subjects_payload()

    async def ledger(self, subject: str, first: date, last: date) -> list[dict[str, Any]]:
        return await self.care.ledger(subject, first, last)

    def _status_payload(self) -> dict[str, Any]:
        health = self.health()
        devices = self.devices.records()
        return {
            "gateway": health["gateway"],
            # "online" only when collecting, storing and publishing all work.
            "state": "degraded" if health["faults"] else "online",
            "faults": health["faults"],
            "version": health["version"],
            "time": health["time"],
            "started_at": health["started_at"],
            "clock": health["clock"],
            "queue": health["queue"],
            "bluetooth": health["bluetooth"],
            "refused_packets": health["refused_packets"],
            "devices": {
                "configured": len(devices),
                "connected": sum(1 for d in devices if d["link"] == "connected"),
            },
        }
