"""A bleak backend on Google's bumble: the gateway's own Bluetooth host stack.

`BumbleRadio` opens one HCI transport (a USB dongle `usb:0`, or the simulator's virtual
controller `tcp-client:127.0.0.1:PORT`) and hands bleak two classes bound to it:

    async with BumbleRadio("tcp-client:127.0.0.1:9001") as radio:
        async with BleakClient(address, backend=radio.client_backend) as client: ...

No bleak module is patched: the classes reach bleak through its `backend=` argument.
"""

from drivers.ble.bumble.client import BumbleClient
from drivers.ble.bumble.radio import BumbleRadio
from drivers.ble.bumble.scanner import BumbleScanner

__all__ = ["BumbleClient", "BumbleRadio", "BumbleScanner"]
