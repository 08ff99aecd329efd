"""Where the server's own requests may go (downloads, remote engines): the `egress` setting, one rule for both.

- `lan` (the default) refuses link-local addresses (169.254.0.0/16, fe80::/10: where clouds serve instance
  metadata and credentials), the metadata addresses outside them (fd00:ec2::254, 100.100.100.200), and those that
  name no one host (0.0.0.0/8, ::, multicast, 240.0.0.0/4 with the broadcast address). Loopback and private
  ranges stay allowed: a local server fetches from the LAN.
- `public` also refuses loopback, private, CGNAT, unique-local (fc00::/7) and every other range that is not
  global.
- `loopback` allows 127.0.0.0/8 and ::1 only.

An IPv4 address written as IPv6 (::ffff:169.254.169.254, or NAT64's 64:ff9b::/96) is judged as the IPv4 address.
A host is judged by every address it resolves to, once per connection, and the connection goes to those
addresses: a second lookup, which DNS rebinding could answer differently, is never made. Through a proxy (downloads
only), the connection is the proxy's, judged so; the target's name is the proxy's to resolve, and only a target
that is an IP address can be judged here (check_address).
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse

from jan_server.errors import InvalidRequestError

EGRESS = ("lan", "public", "loopback")
RULES = {
    "lan": "no link-local, cloud metadata, multicast or unspecified addresses",
    "public": "public addresses only",
    "loopback": "this machine's loopback addresses only",
}

_NEVER = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8", "169.254.0.0/16", "100.100.100.200/32", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "fe80::/10", "fd00:ec2::254/128", "ff00::/8",
))
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """A host at an address the egress setting refuses; the message says which setting, never the address."""

    def __init__(self, egress: str):
        super().__init__(f"an address this server's egress setting ('{egress}': {RULES[egress]}) refuses")
        self.egress = egress


def allows(egress: str, address: str) -> bool:
    """Whether `egress` lets the server connect to the IP `address` (as getaddrinfo gives it, scope id and all)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    elif ip in _NAT64:
        ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if egress == "loopback":
        return any(ip in net for net in _LOOPBACK)
    if any(ip in net for net in _NEVER):
        return False
    return egress == "lan" or (ip.is_global and not ip.is_multicast)


def addresses(host: str, egress: str, *, numeric: bool = False) -> list[str]:
    """The IP addresses `host` resolves to, in getaddrinfo's order; Refused if egress refuses any of them.
    Raises OSError (socket.gaierror) or UnicodeError for a host that does not resolve, or with `numeric`, for a
    host that is not an IP address (no lookup is made then)."""
    flags = socket.AI_NUMERICHOST if numeric else 0
    found = list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=flags)))
    if not all(allows(egress, address) for address in found):
        raise Refused(egress)
    return found


def connect(egress: str, address: tuple[str, int], timeout, source_address=None) -> socket.socket:
    """socket.create_connection, to the addresses egress allows only (each tried in turn, as it does)."""
    host, port = address
    error: OSError | None = None
    for ip in addresses(host, egress):
        try:
            return socket.create_connection((ip, port), timeout, source_address)
        except OSError as exc:
            error = exc
    raise error or OSError(f"{host} has no address")


def check_address(host: str, egress: str) -> None:
    """Refused if `host` is an IP address egress refuses, in any form getaddrinfo reads without a lookup
    (2852039166 and 0xa9.0xfe.0xa9.0xfe too, and with a trailing dot, which a proxy's resolver may drop); a name
    passes unresolved, as a proxy resolves it."""
    try:
        addresses(host.rstrip("."), egress, numeric=True)
    except (OSError, UnicodeError):
        pass


def check_url(url: str, egress: str, param: str, *, proxied: bool = False) -> None:
    """A 400 naming `param` if the URL's host is, or resolves to, an address egress refuses. A host that does not
    resolve now passes: each connection checks again anyway. If a proxy will carry the request (`proxied`), only a
    host that is an IP address is checked: a name is the proxy's to resolve."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        if proxied:
            check_address(host, egress)
        else:
            addresses(host, egress)
    except Refused as exc:
        raise InvalidRequestError(f"The host of {param} is, or resolves to, {exc}.", param=param, code="address_refused") from None
    except (OSError, UnicodeError, ValueError):
        pass


def shown(url: str) -> str:
    """The URL as logs show it: without user info or query, which may hold credentials."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
