"""Which network interface holds an address (for resourceconfig.json)."""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Optional

_SIOCGIFADDR = 0x8915


def _ipv4_of(name: str) -> Optional[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interface_for(address: str) -> Optional[str]:
    """The interface whose IPv4 address is `address` (a name is resolved first), or None."""
    try:
        wanted = socket.gethostbyname(address) if address else ""
    except OSError:
        return None
    for _, name in socket.if_nameindex():
        if name != "lo" and _ipv4_of(name) == wanted:
            return name
    return None
