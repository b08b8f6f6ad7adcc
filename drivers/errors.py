"""The errors a device's bytes can cause, by what someone does about them.

Decoding errors (`MalformedPacket` and its kinds) are radio noise or device quirks: counted
and logged. Security errors (`SecurityRejection`) may be an attack: counted apart, so an
attack never looks like noise. Parsers raise the most specific class that fits.
"""

from __future__ import annotations


class RefusedPacket(ValueError):
    """Bytes from a device that were not accepted. The message says exactly why."""


class MalformedPacket(RefusedPacket):
    """The bytes could not be decoded: radio noise or a device quirk. Raised as such
    only when no subclass fits: bytes left over where the format ends, an encrypted
    packet with no key to read it."""


class TruncatedPacket(MalformedPacket):
    """Too short: a field runs past the end, or a packet is incomplete."""


class ChecksumMismatch(MalformedPacket):
    """A CRC, a checksum or a framing check (sync bits, parity bits, start bytes) failed."""


class ImplausibleValue(MalformedPacket):
    """Well-framed, but a value is impossible or reserved, a sentinel is not a
    measurement, or the format, version, object id or flag is unsupported."""


class SecurityRejection(RefusedPacket):
    """Refused by a security check, not by decoding: maybe an attack. Raised as such
    when none of its kinds fits: a MiBeacon frame naming another device's MAC."""


class ReplayedPacket(SecurityRejection):
    """An encrypted packet whose encryption counter went back: a replay."""


class DowngradedPacket(SecurityRejection):
    """A clear-text packet from a device configured with a key (an unencrypted BTHome
    packet or MiBeacon frame when a key is set): a downgrade."""


class DecryptionFailed(SecurityRejection):
    """The message integrity check (MIC) failed: a wrong key or MAC, or a tampered packet."""


def length_mismatch(message: str, length: int, needed: int) -> MalformedPacket:
    """The error for `length` bytes where the format needs exactly `needed`: a
    `TruncatedPacket` when short, a `MalformedPacket` when bytes are left over."""
    return TruncatedPacket(message) if length < needed else MalformedPacket(message)
