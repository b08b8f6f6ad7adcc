"""A running gateway whose page nobody has opened does not hold the page's renderer, its
languages, the Prometheus exposition or a WebSocket library in memory (issue 12: a
household's gateway in 64 MB): Jinja2, Babel and prometheus-client are loaded with the
first page or scrape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

#: websockets: uvicorn would load it for a WebSocket the page never uses.
_LAZY = ("jinja2", "babel", "prometheus_client", "websockets")

# A real service (store, pipeline, uplink, the page listening), started and stopped in
# a process of its own, so that nothing the tests imported counts.
_PROBE = """
import asyncio, sys
from pathlib import Path
from gateway.broker import free_port, wait_for_port
from gateway.config import parse_config
from gateway.service import GatewayService

async def main(data_dir: str) -> None:
    web_port = free_port()
    config = parse_config(
        {
            "gateway": {"id": "gw-lazy", "township": "t", "data_dir": data_dir},
            "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"},
            "web": {"listen": f"127.0.0.1:{web_port}"},
            "devices": [{"kind": "cms50", "port": "/dev/absent-lazy", "subject": "bed-01"}],
        },
        base_dir=Path(data_dir),
    )
    service = GatewayService(config)
    await service.start()
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", web_port)  # the page serves
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))
        print("loaded:", " ".join(loaded))
    finally:
        await service.stop()

asyncio.run(main(sys.argv[1]))
"""


def test_a_gateway_whose_page_is_not_open_leaves_its_renderer_and_metrics_unloaded(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path), *_LAZY],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: \n" in done.stdout, done.stdout
