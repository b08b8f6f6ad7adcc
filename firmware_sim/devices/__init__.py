"""Simulated Bluetooth devices: bumble GATT servers speaking the standard profiles and the
BerryMed and PC-60FW protocols, and advertisement-only door sensors."""
