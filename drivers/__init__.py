"""Device support: pure parsers from bytes to measurements, and the sessions that own
connections (Bluetooth through bleak, serial through pyserial).

Nothing above this package imports bleak or pyserial.
"""
