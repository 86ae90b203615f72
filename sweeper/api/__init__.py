"""The provider's API: typed models (`models`) and the HTTP client (`client`)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP, IPv6 with or without brackets) is this machine.

    A bearer key may travel over plain http only to such a host.
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
