"""The fleet bench (issue 13): many simulated gateways into one broker, stored by the
township's consumers. `python -m bench.fleet --help`; bench/README.md, "The fleet"."""
