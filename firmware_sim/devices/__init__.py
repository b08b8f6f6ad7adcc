"""Simulated Bluetooth devices: bumble GATT servers speaking the standard profiles."""
