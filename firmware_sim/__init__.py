"""Simulated devices that speak the real protocols byte for byte."""
