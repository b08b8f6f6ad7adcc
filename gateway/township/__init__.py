"""The township's side of the contract: a reference consumer that stores what the
gateways publish (`consumer.py` into `store.py`, through `ingest.py`), sends them
commands (`commands.py`), and reports from its database (`reports.py`), on the command
line as `bedside-gateway township` (`cli.py`). The gateway itself never imports it."""
