"""The local status page and its JSON API (FastAPI on uvicorn, in the service's loop)."""
