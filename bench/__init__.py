"""Throughput, latency and memory of the gateway, each against a baseline measured in
the same run: `python -m bench [--quick] [--readings N]` (see bench/README.md).

Every measurement runs in its own child process (`python -m bench.child`) with its own
mosquitto on a free port and its own temporary directory, so one run's memory, threads
and files never leak into the next. Nothing here is used by the test suite for timing.
"""
