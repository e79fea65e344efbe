"""Which local addresses a peer connection offers as ICE host candidates, and the ICE servers
the page gets.

aioice gathers a host candidate on every address of every interface (`get_host_addresses`
over ifaddr), container bridges and link-local addresses included. A browser can never
reach those, and each answer would tell anyone who asks the host's internal topology. The
filter here narrows the address list one connection at a time, before any socket is bound:
an excluded address then has no socket, so it is neither in the answer nor used for checks
(and no server-reflexive candidate is derived from it). It wraps the one aioice method that
receives the list, on that connection's own object; nothing process-wide is changed
(agent/transport/aiortc_internals.py holds that private access).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import ifaddr
from aiortc import RTCPeerConnection

from agent.config import IceServer, ServerConfig
from agent.transport import aiortc_internals

log = logging.getLogger(__name__)


class IceFilterError(RuntimeError):
    """The filter came too late: the connection already gathers its candidates."""


def _address_of(ip: ifaddr.IP) -> str:
    return ip.ip if isinstance(ip.ip, str) else ip.ip[0]


@dataclass(frozen=True)
class HostAddressFilter:
    exclude_interfaces: tuple[str, ...]
    allow_link_local: bool

    @classmethod
    def from_config(cls, config: ServerConfig) -> HostAddressFilter:
        return cls(config.ice_exclude_interfaces, config.ice_allow_link_local)

    @property
    def active(self) -> bool:
        return bool(self.exclude_interfaces) or not self.allow_link_local

    def excluded_interface_addresses(self, adapters: Iterable[ifaddr.Adapter]) -> set[str]:
        excluded: set[str] = set()
        for adapter in adapters:
            names = {adapter.name, adapter.nice_name}
            if any(fnmatchcase(n, p) for n in names for p in self.exclude_interfaces):
                excluded.update(_address_of(ip) for ip in adapter.ips)
        return excluded

    def keep(self, addresses: Iterable[str], adapters: Iterable[ifaddr.Adapter]) -> list[str]:
        excluded = self.excluded_interface_addresses(adapters)
        kept = []
        for address in addresses:
            if address in excluded:
                continue
            try:
                link_local = ipaddress.ip_address(address.split("%")[0]).is_link_local
            except ValueError:
                link_local = False
            if link_local and not self.allow_link_local:
                continue
            kept.append(address)
        return kept

    def apply(self, pc: RTCPeerConnection) -> None:
        """Narrow the host addresses `pc` will gather on. Call after setRemoteDescription
        (which creates the answerer's transports) and before setLocalDescription (which
        gathers)."""
        if not self.active:
            return
        for connection in _ice_connections(pc):
            self._wrap(connection)

    def _wrap(self, connection: Any) -> None:
        if aiortc_internals.gathering_started(connection):
            raise IceFilterError("ICE gathering started before the address filter was set")

        def keep(addresses: list[str]) -> list[str]:
            # Interfaces are read now, not at startup: bridges come and go with containers.
            kept = self.keep(addresses, ifaddr.get_adapters())
            if len(kept) != len(addresses):
                log.debug("ICE host candidates: kept %s of %s", kept, addresses)
            return kept

        aiortc_internals.narrow_host_addresses(connection, keep)


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    """The aioice connection of every ICE transport `pc` will gather on."""
    dtls_transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls_transports.append(pc.sctp.transport)
    connections: dict[int, Any] = {}
    for dtls in dtls_transports:
        if dtls is None:
            continue  # some malformed offers leave a section without one: it gathers nothing
        connection = aiortc_internals.ice_connection(dtls.transport.iceGatherer)
        connections[id(connection)] = connection
    return list(connections.values())


def browser_ice_servers(servers: Iterable[IceServer]) -> list[dict[str, Any]]:
    """RTCIceServer dictionaries for the page. Absent credentials are left out: a browser
    turns a `null` username into the string "null"."""
    result: list[dict[str, Any]] = []
    for server in servers:
        entry: dict[str, Any] = {"urls": list(server.urls)}
        if server.username is not None:
            entry["username"] = server.username
        if server.credential is not None:
            entry["credential"] = server.credential
        result.append(entry)
    return result
