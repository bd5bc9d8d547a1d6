"""Where the exporter may push OTLP: the `--otlp-allow` list (SSRF guard for StartSampling).

A run's `otlp_endpoint` makes the exporter connect out and send its host name and resource
attributes, so it must name an allowed host: loopback always (`localhost`, 127.0.0.0/8, ::1),
the host of the exporter's own `--otlp-endpoint`, and the entries of `--otlp-allow`, each a host
name (any port), `host:port`, or an IP network in CIDR form. Host names are compared as written,
never resolved (a name that resolves to an internal address is not thereby allowed).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointError(ValueError):
    """An endpoint or allow-list entry that cannot be parsed, or a host that is not allowed."""


def split_endpoint(endpoint: str) -> tuple[str, int | None]:
    """'host:port', 'http(s)://host:port[/path]' or '[v6]:port' -> (lowercase host, port or None)."""
    text = endpoint.strip()
    if "://" not in text:
        text = "//" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise EndpointError(f"cannot parse {endpoint!r} as host:port or a URL") from err
    if parts.scheme not in ("", "http", "https") or not parts.hostname or parts.username or parts.password:
        raise EndpointError(f"{endpoint!r} must be host:port or http(s)://host:port")
    return parts.hostname.lower().rstrip("."), port


LOOPBACK: tuple[IpNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class AllowList:
    hosts: frozenset[str] = frozenset({"localhost"})  # any port
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IpNetwork, ...] = LOOPBACK

    @classmethod
    def parse(cls, entries: str, default_endpoint: str = "") -> AllowList:
        """Comma-separated `--otlp-allow` entries, plus the host of the default endpoint."""
        hosts: set[str] = {"localhost"}
        host_ports: set[tuple[str, int]] = set()
        networks: list[IpNetwork] = list(LOOPBACK)
        for raw in [e.strip() for e in entries.split(",") if e.strip()]:
            if "/" in raw and "://" not in raw:
                try:
                    networks.append(ipaddress.ip_network(raw, strict=False))
                    continue
                except ValueError as err:
                    raise EndpointError(f"--otlp-allow entry {raw!r} is not a CIDR network") from err
            host, port = split_endpoint(raw)
            if port is None:
                hosts.add(host)
            else:
                host_ports.add((host, port))
        if default_endpoint:
            hosts.add(split_endpoint(default_endpoint)[0])
        return cls(frozenset(hosts), frozenset(host_ports), tuple(networks))

    def allows(self, endpoint: str) -> bool:
        host, port = split_endpoint(endpoint)
        if host in self.hosts or (port is not None and (host, port) in self.host_ports):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def check(self, endpoint: str) -> None:
        """Raise EndpointError unless the endpoint's host is allowed."""
        host, _ = split_endpoint(endpoint)
        if not self.allows(endpoint):
            raise EndpointError(f"otlp_endpoint host {host!r} is not allowed (loopback and the exporter's --otlp-allow list only)")
