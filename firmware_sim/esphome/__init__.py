"""A simulated ESPHome Bluetooth proxy (`python -m firmware_sim esphome-proxy`)."""
