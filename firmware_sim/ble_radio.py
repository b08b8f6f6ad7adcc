"""The virtual radio: bumble's in-memory link layer, with the fixes a gateway needs.

Simulated peripherals and the gateway's controllers share one `LocalLink`. A gateway in
another process reaches the link through `HciTcpServer`: HCI over TCP, one fresh
`VirtualController` per TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bumble import core, hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport.common import PacketParser

logger = logging.getLogger(__name__)


class VirtualController(Controller):
    """bumble's virtual controller, completed where a gateway depends on it."""

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Withdraw the pending connection and report it failed, as a real controller
        does; bumble's controller ignores the cancel and the host then waits forever
        for a connection to an absent device (pitfall 1)."""
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failure = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # After the Command Complete that the caller sends for this command.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failure)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def detach(self) -> None:
        """Leave the link as if powered off: peers see their links time out.

        HCI Reset does not clear bumble's controller, so a controller whose host went
        away must not be reused (pitfall 6).
        """
        for connection in list(self.le_connections.values()):
            with contextlib.suppress(core.InvalidArgumentError):  # the peer left first
                connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_CONNECTION_TIMEOUT_ERROR))
        self.le_connections.clear()
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.le_scan_enable = False
        self.pending_le_connection = None
        self.host = None
        self.link.remove_controller(self)


class _HciConnection(asyncio.Protocol):
    """One gateway host on the TCP side: bytes in, HCI packets to its own controller."""

    def __init__(self, link: LocalLink, name: str, registry: set[_HciConnection]) -> None:
        self._link = link
        self._name = name
        self._registry = registry
        self._controller: VirtualController | None = None
        self._parser: PacketParser | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._controller = VirtualController(self._name, host_sink=self, link=self._link)
        self._parser = PacketParser(self._controller)
        self._registry.add(self)
        logger.info("gateway host connected: %s", self._name)

    def on_packet(self, packet: bytes) -> None:
        """Controller to host."""
        if not self._transport.is_closing():
            self._transport.write(packet)

    def data_received(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except core.InvalidPacketError:
            logger.warning("%s sent an invalid HCI packet; closing", self._name)
            self._transport.close()

    def close(self) -> None:
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        if self._controller is not None:
            self._controller.detach()
            self._controller = None
        logger.info("gateway host disconnected: %s", self._name)


class HciTcpServer:
    """HCI over TCP into a `LocalLink`; each connection gets a fresh controller."""

    def __init__(self, link: LocalLink, host: str = "127.0.0.1", port: int = 0) -> None:
        self._link = link
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[_HciConnection] = set()
        self._accepted = 0

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._server is None:
            raise RuntimeError("HCI server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def hci_spec(self) -> str:
        """The bumble transport spec a gateway opens to reach this server."""
        return f"tcp-client:{self._host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            self._new_connection, self._host, self._port
        )

    def _new_connection(self) -> _HciConnection:
        self._accepted += 1
        return _HciConnection(self._link, f"gateway-{self._accepted}", self._connections)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()
            self._server = None
