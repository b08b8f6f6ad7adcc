"""The bedside vital-sign gateway service."""

__version__ = "0.1.0"
