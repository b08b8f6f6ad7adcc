"""The MQTT contract: Pydantic models of every payload (`models.py`) and the JSON Schemas
generated from them (`*.json`, `python -m gateway.contract`), which docs/asyncapi.yaml
refers to."""
