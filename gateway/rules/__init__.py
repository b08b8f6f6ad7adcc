"""The alert engine: pure, deterministic rules over accepted readings and the clock.

Rules see readings, never transports; time is the reading's `received_at` or the `now`
of a clock tick, both given by the caller, so a recorded scenario replays to the same
alerts. `registry.py` lists the rules and their configuration tables.
"""
