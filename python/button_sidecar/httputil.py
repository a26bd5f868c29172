"""Small HTTP helpers shared by the sidecar's HTTP endpoint and the Button sandbox."""

from __future__ import annotations

import base64
import ipaddress


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic Authorization header, None when it is not one.

    Hand-rolled because aiohttp 3.14 deprecates ``BasicAuth`` (and its ``decode``).
    """
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except ValueError:  # bad base64 (binascii.Error) or bad UTF-8 (UnicodeDecodeError)
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def url_host(host: str) -> str:
    """The host part of a URL for a bound address: IPv6 in brackets, a wildcard address as loopback."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        # Bound to every interface: hand out the loopback address, which is certain to connect.
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)
