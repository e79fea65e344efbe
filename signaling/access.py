"""Who may use the agent: the bearer token, the browser Origin check, and the client address
that per-client limits count against.

Every route needs the token (when one is configured) except those named in PUBLIC_ROUTES:
the page and its files must load before the page can read `?token=` from its URL, and
/health is what load balancers and the page's status line poll. New routes are therefore
protected unless declared public.

DNS rebinding: a page on `evil.example` whose name the attacker re-points at 127.0.0.1 is
same-origin with itself, so the Origin check passes; only the Host header gives it away.
A tokenless server bound to loopback therefore answers only requests addressed to a
loopback name or address (or to a host of `--allowed-origins`, or relayed by a trusted
proxy). With a token the attacker lacks the token, which is what protects that case.

Reverse proxies: X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host are believed only
when the TCP peer is one of `--trusted-proxies`. Anyone else could send them to pick the
address their limits count against, and a proxy that terminates TLS talks plain HTTP to us,
so behind it the browser's `https://` Origin only matches once X-Forwarded-Proto is read.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from agent.config import ServerConfig
from agent.config.checks import is_loopback_host, normalize_origin

PUBLIC_ROUTES = frozenset({"page", "static", "health"})
"""Route names that need no token and no Origin check."""

UNKNOWN_CLIENT = "unknown"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_key(address: str) -> str:
    """What per-client limits count against: the IPv4 address, or the IPv6 /64 (one host
    usually owns a whole /64 and picks new addresses in it at will)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or UNKNOWN_CLIENT
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _first(value: str | None) -> str | None:
    """The first of a comma-separated header: the value the client-facing proxy set."""
    if value is None:
        return None
    first = value.split(",")[0].strip()
    return first or None


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None
    allowed_origins: frozenset[str]
    trusted_proxies: tuple[IpNetwork, ...]
    loopback_names_only: bool = False
    """Refuse requests whose Host is not a loopback name (a tokenless loopback server)."""

    @classmethod
    def from_config(cls, config: ServerConfig) -> AccessPolicy:
        return cls(
            token=config.token,
            allowed_origins=frozenset(normalize_origin(o) for o in config.allowed_origins),
            trusted_proxies=tuple(
                ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies
            ),
            loopback_names_only=config.token is None and is_loopback_host(config.host),
        )

    # -- client address ---------------------------------------------------------------

    def _trusted(self, address: str | None) -> bool:
        if not address or not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        return self._trusted(request.remote)

    def client_address(self, request: web.Request) -> str:
        """The TCP peer, or behind trusted proxies the nearest X-Forwarded-For hop that is
        not itself a trusted proxy (proxies append, so the right end is the one to trust)."""
        address = request.remote or UNKNOWN_CLIENT
        if not self._from_trusted_proxy(request):
            return address
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
        for hop in reversed(forwarded.split(",")):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage: stop at the last hop we could read
            address = hop
            if not self._trusted(hop):
                break
        return address

    def client_key(self, request: web.Request) -> str:
        return client_key(self.client_address(request))

    # -- host -------------------------------------------------------------------------

    def host_refusal(self, request: web.Request) -> str | None:
        """Why this request's Host is refused (DNS rebinding), or None."""
        if not self.loopback_names_only or self._from_trusted_proxy(request):
            return None
        host = _hostname(request.host)
        if host is not None and (
            host == "localhost"
            or host.endswith(".localhost")
            or is_loopback_host(host)
            or host in {_hostname(o.split("://", 1)[-1]) for o in self.allowed_origins}
        ):
            return None
        return (
            f"requests for host {request.host!r} are not served: this server has no token, "
            "so it answers only on localhost (open http://localhost:PORT/, or start it with "
            "--token, or name the host in --allowed-origins)"
        )

    # -- origin -----------------------------------------------------------------------

    def own_origin(self, request: web.Request) -> str | None:
        """The origin the browser used to load our page, as far as this request tells."""
        scheme, host = request.scheme, request.host
        if self._from_trusted_proxy(request):
            scheme = _first(request.headers.get("X-Forwarded-Proto")) or scheme
            host = _first(request.headers.get("X-Forwarded-Host")) or host
        try:
            return normalize_origin(f"{scheme}://{host}")
        except ValueError:
            return None

    def origin_refusal(self, request: web.Request) -> str | None:
        """Why this request's Origin is refused, or None. No Origin header: not a browser
        request (the bench client, curl), which the token alone governs."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            normalized = None  # "null" (sandboxed frames, file: pages) or junk
        if normalized is not None and (
            normalized in self.allowed_origins or normalized == self.own_origin(request)
        ):
            return None
        return (
            f"requests from origin {origin!r} are not allowed: open the agent's own page, "
            "or start the server with --allowed-origins"
        )

    # -- token ------------------------------------------------------------------------

    def token_ok(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            given_bytes = given.strip().encode("utf-8")
        except UnicodeEncodeError:
            return False
        # Constant time: the comparison must not tell how much of a guess was right.
        return hmac.compare_digest(given_bytes, self.token.encode("utf-8"))


def _hostname(host: str) -> str | None:
    """`Host` without its port, lowercased: `[::1]:8080` -> `::1`, `a.b:80` -> `a.b`."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".") or None


ACCESS_KEY = web.AppKey("access", AccessPolicy)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host, Origin, then token, for every route not in PUBLIC_ROUTES; runs before the
    handler, so a refused offer never builds a peer connection."""
    match = request.match_info
    if match.http_exception is not None or match.route.name in PUBLIC_ROUTES:
        return await handler(request)  # 404/405 answers need no guarding
    policy = request.app[ACCESS_KEY]
    refusal = policy.host_refusal(request) or policy.origin_refusal(request)
    if refusal is not None:
        return web.json_response({"error": refusal}, status=403)
    if not policy.token_ok(request):
        return web.json_response(
            {"error": "a valid access token is required: open the URL with ?token=SECRET"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="voice-agent"'},
        )
    return await handler(request)
