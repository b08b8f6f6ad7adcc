"""ESPHome Bluetooth proxies as the gateway's radios, over their native API (aioesphomeapi).

`ProxyLink` keeps one proxy's API connection up and relays what it hears; its
`client_backend` is a bleak client backend that connects through the proxy's slots:

    link = ProxyLink("ward-3", "192.168.1.40", 6053, key, on_advertisement=..., on_change=...,
                     backoff=Backoff())
    await link.start()
    async with BleakClient(device, backend=link.client_backend) as client: ...

`device` is the `BLEDevice` of an advertisement the proxy relayed (`details` its
`RawAdvert`). No bleak module is patched.
"""

from drivers.ble.esphome.client import EsphomeClient
from drivers.ble.esphome.link import ProxyLink, ProxyState, RawAdvert

__all__ = ["EsphomeClient", "ProxyLink", "ProxyState", "RawAdvert"]
