"""The alert engine: pure, deterministic rules over accepted readings.

Rules see readings, never transports; time is the reading's `received_at`, so a recorded
scenario replays to the same alerts.
"""
