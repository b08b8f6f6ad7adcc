"""Helpers shared by the advertisement parsers (BTHome, MiBeacon): MAC and key handling,
AES-128-CCM with a 4-byte MIC, and the per-device duplicate/replay filter."""

from __future__ import annotations

import re

from drivers.errors import DecryptionFailed, ReplayedPacket
from drivers.measurement import Measurement

MIC_LENGTH = 4
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}")


def parse_mac(mac: str) -> bytes:
    """Parse "54:48:E6:8F:80:A5" (or dashes, or bare hex) into 6 bytes, most significant first."""
    if not _MAC.fullmatch(mac.strip()):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes.fromhex(re.sub("[:-]", "", mac.strip()))


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02X}" for b in mac)


def check_key(key: bytes) -> bytes:
    if len(key) != 16:
        raise ValueError(f"an AES-128 key is 16 bytes, got {len(key)}")
    return key


def ccm_decrypt(what: str, key: bytes, nonce: bytes, sealed: bytes, aad: bytes | None) -> bytes:
    """Decrypt `ciphertext | MIC`; a wrong key, MAC or tampered packet fails the MIC.

    cryptography is imported here, at the first encrypted packet: loading it costs
    ~6 MB of memory, which a gateway without encrypting door sensors never needs."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    try:
        return AESCCM(check_key(key), tag_length=MIC_LENGTH).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise DecryptionFailed(
            f"{what}: decryption failed (MIC mismatch: wrong key or MAC, or tampered)"
        ) from None


class AdvertFilter:
    """Drops repeats of an advertisement and rejects replayed encrypted ones.

    Devices repeat each advertisement several times. As in bthome-ble, a packet id
    (mod 256) is new when it is 1-63 ahead of the last one, or when more than
    `reset_after_s` passed since the device was last heard. An encryption counter lower
    than the last accepted one is a replay, unless it is below `counter_restart` (the
    device restarted, e.g. after a battery change).
    """

    def __init__(self, reset_after_s: float = 4.0, counter_restart: int = 100) -> None:
        self._reset_after_s = reset_after_s
        self._counter_restart = counter_restart
        self._last_heard: float | None = None
        self._last_id: int | None = None
        self._last_counter: int | None = None

    def accept(self, now: float, packet_id: int | None, counter: int | None) -> bool:
        """True when the packet is new; False for a repeat. Raises ReplayedPacket on replay.
        Call only for authentic packets (decrypted, or unencrypted by configuration)."""
        silent = self._last_heard is None or now - self._last_heard > self._reset_after_s
        self._last_heard = now
        if counter is not None and self._last_counter is not None:
            if counter == self._last_counter:
                return False
            if self._counter_restart <= counter < self._last_counter:
                raise ReplayedPacket(
                    f"encryption counter went back from {self._last_counter} to {counter}: "
                    "replayed packet rejected"
                )
        if counter is not None:
            self._last_counter = counter
        if packet_id is None:
            return True
        if silent or self._last_id is None or 0 < (packet_id - self._last_id) % 256 < 64:
            self._last_id = packet_id
            return True
        return False


class AdvertDecoder:
    """One per device: decrypts, rejects replays and drops repeated advertisements.
    Subclasses say how a packet parses and which number identifies it."""

    def __init__(self, key: bytes | None, mac: str) -> None:
        self._key = None if key is None else check_key(key)
        parse_mac(mac)
        self._mac = mac
        self._filter = AdvertFilter()

    def feed(self, service_data: bytes, now: float) -> list[Measurement]:
        """`now` is a monotonic time in seconds. [] for a repeat of the last packet."""
        measurements, packet_id, counter = self._parse(service_data)
        if not self._filter.accept(now, packet_id, counter):
            return []
        return measurements

    def _parse(self, service_data: bytes) -> tuple[list[Measurement], int | None, int | None]:
        """The packet's measurements, its packet id and its encryption counter."""
        raise NotImplementedError
