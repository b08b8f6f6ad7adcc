"""The device's side of ESPHome's encrypted native API framing, without I/O.

Every frame on the wire is `01 | length u16 big-endian | body`. The client opens with
an empty "client hello" frame and the first Noise_NNpsk0_25519_ChaChaPoly_SHA256
handshake message (`00 | noise message`); the device answers with its "server hello"
(`01 | name 00 | mac 00`: the protocol chosen, then who it is) and the second handshake
message, or with a refusal (`01 | reason`) and closes: "Handshake MAC failure" for a
client holding another key, which aioesphomeapi raises as
`InvalidEncryptionKeyAPIError`. After the handshake each body is one encrypted message,
`type u16 | length u16 | protobuf`.

Written here because no Python library plays the device's side (aioesphomeapi is the
client only); this follows ESPHome's own frame helper (`api_frame_helper_noise.cpp`):
the prologue `NoiseAPIInit 00 00` + the client hello, 128-byte handshake frames, the
refusal texts.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from enum import Enum, auto

from cryptography.exceptions import InvalidTag
from noise.connection import NoiseConnection

NOISE_PROTOCOL = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
PROLOGUE_INIT = b"NoiseAPIInit"
#: The one protocol a device offers (the first byte of its server hello).
CHOSEN_PROTOCOL = 0x01
#: ESPHome refuses longer frames before the handshake is complete.
MAX_HANDSHAKE_FRAME = 128
MAC_FAILURE = "Handshake MAC failure"


def decode_noise_key(key: str) -> bytes:
    """The 32-byte pre-shared key from its base64 text, as ESPHome's `api: encryption:
    key:` takes it; ValueError names what is wrong (never the key)."""
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error as error:
        raise ValueError("the noise key is not base64") from error
    if len(raw) != 32:
        raise ValueError(f"the noise key is {len(raw)} bytes, not 32")
    return raw


class HandshakeRefused(Exception):
    """The client's handshake was refused; `reply` (what was answered before, then the
    refusal frame) is to be sent before the connection is closed."""

    def __init__(self, reason: str, reply: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class FrameError(Exception):
    """The peer broke the framing or the encryption: the connection is to be closed."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decrypted API message: its type number and protobuf bytes."""

    type: int
    payload: bytes


class _State(Enum):
    CLIENT_HELLO = auto()
    HANDSHAKE = auto()
    DATA = auto()
    CLOSED = auto()


def frame(body: bytes) -> bytes:
    return bytes((0x01, len(body) >> 8, len(body) & 0xFF)) + body


class NoiseResponder:
    """One connection's framing: `receive(bytes)` returns the messages that are complete
    and the bytes to send back (server hello, handshake); `encode` seals a message."""

    def __init__(self, psk: bytes, name: str, mac: str) -> None:
        self._psk = psk
        self._server_hello = bytes([CHOSEN_PROTOCOL]) + name.encode() + b"\0" + mac.encode() + b"\0"
        self._buffer = bytearray()
        #: What this `receive` call answers so far: a refusal is sent after it.
        self._out = bytearray()
        self._state = _State.CLIENT_HELLO
        self._noise: NoiseConnection | None = None

    @property
    def ready(self) -> bool:
        return self._state is _State.DATA

    def receive(self, data: bytes) -> tuple[list[Message], bytes]:
        """Raises HandshakeRefused or FrameError; nothing more is to be read then."""
        self._buffer += data
        messages: list[Message] = []
        self._out.clear()
        while (body := self._next_frame()) is not None:
            if self._state is _State.CLIENT_HELLO:
                self._out += self._on_client_hello(body)
            elif self._state is _State.HANDSHAKE:
                self._out += self._on_handshake(body)
            elif self._state is _State.DATA:
                messages.append(self._decrypt(body))
        return messages, bytes(self._out)

    def encode(self, message_type: int, payload: bytes) -> bytes:
        if self._noise is None or not self.ready:
            raise RuntimeError("no message can be sent before the handshake")
        inner = struct.pack(">HH", message_type, len(payload)) + payload
        return frame(bytes(self._noise.encrypt(inner)))

    def _next_frame(self) -> bytes | None:
        if self._state is _State.CLOSED or len(self._buffer) < 3:
            return None
        if self._buffer[0] != 0x01:
            self._refuse("Bad indicator byte")
        size = self._buffer[1] << 8 | self._buffer[2]
        if self._state is not _State.DATA and size > MAX_HANDSHAKE_FRAME:
            self._refuse("Bad handshake packet len")
        if len(self._buffer) < 3 + size:
            return None
        body = bytes(self._buffer[3 : 3 + size])
        del self._buffer[: 3 + size]
        return body

    def _refuse(self, reason: str) -> None:
        self._state = _State.CLOSED
        raise HandshakeRefused(reason, bytes(self._out) + frame(b"\x01" + reason.encode()))

    def _on_client_hello(self, body: bytes) -> bytes:
        # The client hello's content is reserved for flags; it enters the prologue.
        noise = NoiseConnection.from_name(NOISE_PROTOCOL)
        noise.set_as_responder()
        noise.set_psks(self._psk)
        noise.set_prologue(PROLOGUE_INIT + struct.pack(">H", len(body)) + body)
        noise.start_handshake()
        self._noise = noise
        self._state = _State.HANDSHAKE
        return frame(self._server_hello)

    def _on_handshake(self, body: bytes) -> bytes:
        assert self._noise is not None
        if not body:
            self._refuse("Empty handshake message")
        if body[0] != 0x00:
            self._refuse("Bad handshake error byte")
        try:
            self._noise.read_message(body[1:])
        except InvalidTag:
            self._refuse(MAC_FAILURE)
        except Exception:  # the noise library's own errors: a broken message
            self._refuse("Handshake error")
        reply = frame(b"\x00" + bytes(self._noise.write_message()))
        self._state = _State.DATA
        return reply

    def _decrypt(self, body: bytes) -> Message:
        assert self._noise is not None
        try:
            inner = bytes(self._noise.decrypt(body))
        except InvalidTag as error:
            self._state = _State.CLOSED
            raise FrameError("a frame failed to decrypt") from error
        if len(inner) < 4:
            self._state = _State.CLOSED
            raise FrameError(f"a message of {len(inner)} bytes is too short")
        message_type, length = struct.unpack_from(">HH", inner)
        if length > len(inner) - 4:
            self._state = _State.CLOSED
            raise FrameError(f"a message says {length} bytes and holds {len(inner) - 4}")
        return Message(message_type, inner[4 : 4 + length])
