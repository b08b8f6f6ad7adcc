"""The errors a device's bytes can cause, by what someone does about them.

Decoding errors (`MalformedPacket` and its kinds) are radio noise or device quirks: counted
and logged. Security errors (`SecurityRejection`) may be an attack: counted apart, so an
attack never looks like noise.
"""

from __future__ import annotations


class RefusedPacket(ValueError):
    """Bytes from a device that were not accepted. The message says exactly why."""


class MalformedPacket(RefusedPacket):
    """The bytes could not be decoded."""


class TruncatedPacket(MalformedPacket):
    """Too short: a field runs past the end, or a packet is incomplete."""


class ChecksumMismatch(MalformedPacket):
    """A CRC, checksum or framing check failed."""


class ImplausibleValue(MalformedPacket):
    """Well-framed, but a value is impossible, reserved or in an unsupported format."""


class SecurityRejection(RefusedPacket):
    """Authentic-looking bytes refused by a security check: maybe an attack."""


class ReplayedPacket(SecurityRejection):
    """An encrypted packet whose counter went back: a replay."""


class DowngradedPacket(SecurityRejection):
    """A clear-text packet from a device configured with a key."""


class DecryptionFailed(SecurityRejection):
    """The message integrity check failed: wrong key or MAC, or a tampered packet."""
