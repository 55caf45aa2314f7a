"""The SSRF guard: which addresses hookdock's outgoing HTTP requests may reach.

A URL hookdock fetches (a vendor's file link) or posts to (an HTTP sink) must not make it a
proxy into the network it runs in: loopback, private and link-local networks, the cloud
metadata services.  ``NetPolicy`` says what is allowed; everything else is checked here:

* ``refusal(address, policy)``: the one verdict, from an explicit table of named networks
  (``ipaddress.is_private`` changed meaning across 3.11 patch releases, so it is not used).
  IPv6 forms that carry an IPv4 address (IPv4-mapped, -compatible, -translated, NAT64, 6to4,
  Teredo) are judged by the IPv4 address they carry as well.  Cloud metadata addresses are
  refused even inside ``allow_networks``.
* ``GuardedResolver`` wraps aiohttp's resolver and refuses a host if ANY of its addresses is
  refused.  aiohttp connects to exactly the addresses the resolver returns, so what was
  checked is what is connected to: a DNS answer cannot change between check and connect.
* ``check_url`` covers what the resolver never sees: the scheme, ``allow_hosts``, and IP
  literals (aiohttp does not resolve those).
* ``get_following`` follows redirects by hand, checking every hop.

Errors raised from the resolver reach the caller of ``session.get()`` unchanged: aiohttp
(3.14, ``connector.py``) wraps only ``OSError`` from ``_resolve_host`` (in
``_create_direct_connection``: ``except OSError as exc: ... raise ClientConnectorDNSError``),
and ``ClientSession._request`` re-raises what is neither a ``ClientError`` nor an ``OSError``
as it is.  ``AddressRefused`` is neither.

A guarded session must not use a proxy (``trust_env=False``, no ``proxy=``): through a proxy,
the resolver would check the proxy's address, not the target's.
"""

from __future__ import annotations

import fnmatch
import re
import socket
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Annotated, Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from yarl import URL

from handlers.errors import FileUnavailable, PermanentSinkError
from handlers.redact import redact_url

__all__ = [
    "AddressRefused",
    "AllowedNetwork",
    "GuardedResolver",
    "HostPattern",
    "NetPolicy",
    "RedirectRefused",
    "check_url",
    "get_following",
    "guarded_connector",
    "refusal",
]

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


class AddressRefused(PermanentSinkError):
    """The guard refused a URL, host or address: the request was never sent."""

    code = "address_refused"


class RedirectRefused(FileUnavailable):
    """A redirect ``get_following`` will not follow: too many, https to http, no Location.

    A ``FileUnavailable`` with code ``file_refused``: ``get_following`` is the file fetcher's.
    A redirect to a refused address raises ``AddressRefused`` instead.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, code="file_refused")


# --------------------------------------------------------------------------- policy


def _network(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ip_network(value.strip(), strict=True)
        except ValueError:
            raise ValueError(
                "must be an address or a network such as 127.0.0.1/32 or fd00::/8"
                " (with no bits set after the prefix length)"
            ) from None
    return value


_PATTERN_CHARS = re.compile(r"[a-z0-9*?\[\]!._-]+")


def _host_pattern(value: str) -> str:
    pattern = value.strip().lower().rstrip(".")
    if not pattern:
        raise ValueError("a host pattern cannot be empty")
    if "://" in pattern:
        raise ValueError(f"{value!r}: write the host only, without a scheme")
    if "/" in pattern:
        raise ValueError(f"{value!r}: write the host only, without a path")
    if ":" in pattern:
        raise ValueError(f"{value!r}: write the host only, without a port")
    if not pattern.isascii():
        raise ValueError(f"{value!r}: write an internationalized name in its xn-- form")
    if not _PATTERN_CHARS.fullmatch(pattern):
        raise ValueError(
            f"{value!r}: a host pattern has letters, digits, '.', '-', '_' and the"
            " wildcards * ? [...] only"
        )
    return pattern


AllowedNetwork = Annotated[Network, BeforeValidator(_network)]
HostPattern = Annotated[str, AfterValidator(_host_pattern)]


class NetPolicy(BaseModel):
    """Where outgoing requests may go, beyond the public internet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_networks: tuple[AllowedNetwork, ...] = ()
    """Explicit opt-in: addresses in these networks may be reached even if private/loopback/etc.
    (e.g. "127.0.0.1/32").  Cloud metadata addresses stay refused."""
    allow_hosts: tuple[HostPattern, ...] = ()
    """Host patterns (case-insensitive, fnmatch-style, e.g. "*.blob.core.windows.net");
    empty = any host."""

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (a name or an address) matches ``allow_hosts`` (or it is empty)."""
        if not self.allow_hosts:
            return True
        name = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.allow_hosts)

    def allows_address(self, address: Address) -> bool:
        return any(address in network for network in self.allow_networks)


# --------------------------------------------------------------------------- the tables

_V4: Final[tuple[tuple[IPv4Network, str], ...]] = tuple(
    (IPv4Network(net), what)
    for net, what in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol assignments address"),
        ("192.0.2.0/24", "a TEST-NET-1 documentation address"),
        ("192.88.99.0/24", "a reserved address, once the 6to4 relay anycast"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a TEST-NET-2 documentation address"),
        ("203.0.113.0/24", "a TEST-NET-3 documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        # Before 240.0.0.0/4, which holds it: the more telling name wins.
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)

_V6: Final[tuple[tuple[IPv6Network, str], ...]] = tuple(
    (IPv6Network(net), what)
    for net, what in (
        ("::/128", "the unspecified address"),
        ("::1/128", "the loopback address"),
        ("100::/64", "a discard-only address"),
        ("2001:2::/48", "a benchmarking address"),
        ("2001:10::/28", "a reserved ORCHID address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "a segment routing (SRv6) address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a deprecated site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)
# Only 2000::/3 is global unicast; the rest of the IPv6 space is reserved.
_GLOBAL_UNICAST: Final = IPv6Network("2000::/3")

_METADATA: Final[Mapping[Address, str]] = {
    IPv4Address("169.254.169.254"): "the instance metadata service (AWS, GCP, Azure, ...)",
    IPv4Address("169.254.170.2"): "the AWS ECS task metadata endpoint",
    IPv6Address("fd00:ec2::254"): "the AWS instance metadata service (IPv6)",
    IPv4Address("100.100.100.200"): "the Alibaba Cloud metadata service",
    IPv4Address("168.63.129.16"): "the Azure WireServer",
    IPv4Address("192.0.0.192"): "the Oracle Cloud metadata service",
}

_MAPPED: Final = IPv6Network("::ffff:0:0/96")
_TRANSLATED: Final = IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE: Final = IPv6Network("::/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL: Final = IPv6Network("64:ff9b:1::/48")
_SIXTOFOUR: Final = IPv6Network("2002::/16")
_TEREDO: Final = IPv6Network("2001::/32")


@dataclass(frozen=True)
class _Embedded:
    form: str
    address: IPv4Address
    reaches_it: bool
    """True when a connection goes to the IPv4 host itself (mapped, NAT64, ...), so opting in
    the IPv4 address opts in this form too; False for tunnels (6to4, Teredo), whose IPv4
    address is a tunnel end, not the host."""


def _low32(address: IPv6Address) -> IPv4Address:
    return IPv4Address(int(address) & 0xFFFFFFFF)


def _embedded(address: IPv6Address) -> list[_Embedded]:
    if address in _MAPPED:
        return [_Embedded("an IPv4-mapped", _low32(address), True)]
    if address in _TRANSLATED:
        return [_Embedded("an IPv4-translated", _low32(address), True)]
    if address in _COMPATIBLE and int(address) > 1:  # not :: nor ::1
        return [_Embedded("an IPv4-compatible", _low32(address), True)]
    if address in _NAT64:
        return [_Embedded("a NAT64", _low32(address), True)]
    if address in _NAT64_LOCAL:
        return [_Embedded("a local-use NAT64", _low32(address), True)]
    if address in _SIXTOFOUR:
        assert address.sixtofour is not None
        return [_Embedded("a 6to4", address.sixtofour, False)]
    if address in _TEREDO:
        assert address.teredo is not None
        server, client = address.teredo
        return [_Embedded("a Teredo", server, False), _Embedded("a Teredo", client, False)]
    return []


def _plain(address: Address) -> Address:
    # A scope (fe80::1%eth0) takes no part in which network holds the address, but it does in
    # equality, which the metadata lookup uses.
    if isinstance(address, IPv6Address) and address.scope_id:
        return IPv6Address(int(address))
    return address


def _classify_v4(address: IPv4Address) -> str | None:
    for network, what in _V4:
        if address in network:
            return f"{what} ({network})"
    return None


@dataclass(frozen=True)
class _Verdict:
    reason: str
    metadata: bool


def _verdict(address: Address, policy: NetPolicy) -> _Verdict | None:
    plain = _plain(address)
    embedded = _embedded(plain) if isinstance(plain, IPv6Address) else []
    own = _METADATA.get(plain)
    if own is not None:
        return _Verdict(
            f"{address} is {own}, a cloud metadata address, never reached"
            " (allow_networks cannot allow it)",
            metadata=True,
        )
    for inner in embedded:
        name = _METADATA.get(inner.address)
        if name is not None:
            return _Verdict(
                f"{address} is {inner.form} address embedding {inner.address}, which is"
                f" {name}, a cloud metadata address, never reached (allow_networks cannot"
                " allow it)",
                metadata=True,
            )
    if policy.allows_address(plain):
        return None
    if embedded and all(e.reaches_it and policy.allows_address(e.address) for e in embedded):
        return None
    if isinstance(plain, IPv4Address):
        what = _classify_v4(plain)
        return None if what is None else _Verdict(f"{address} is {what}", metadata=False)
    for network, what in _V6[:2]:  # :: and ::1 lie inside ::/96; they are not IPv4 forms
        if plain in network:
            return _Verdict(f"{address} is {what} ({network})", metadata=False)
    if embedded:
        for inner in embedded:
            what = _classify_v4(inner.address)
            if what is not None:
                form = f"{inner.form} address embedding {inner.address}"
                return _Verdict(f"{address} is {form}, which is {what}", metadata=False)
        if plain in _NAT64_LOCAL:
            # Reached only through a translator of the local network, whatever it carries.
            what = f"a local-use NAT64 address ({_NAT64_LOCAL}), not globally reachable"
            return _Verdict(f"{address} is {what}", metadata=False)
        return None
    for network, what in _V6[2:]:
        if plain in network:
            return _Verdict(f"{address} is {what} ({network})", metadata=False)
    if plain not in _GLOBAL_UNICAST:
        return _Verdict(
            f"{address} is a reserved address (outside {_GLOBAL_UNICAST}, the global"
            " unicast space)",
            metadata=False,
        )
    return None


def refusal(address: Address, policy: NetPolicy) -> str | None:
    """None if ``address`` may be reached; else why not, for a person to read.

    For instance ``10.0.0.5 is a private address (10.0.0.0/8)``.
    """
    verdict = _verdict(address, policy)
    return None if verdict is None else verdict.reason


def _hint(verdict: _Verdict) -> str:
    return "" if verdict.metadata else "; to reach it anyway, add it to allow_networks"


# --------------------------------------------------------------------------- URLs

# All-numeric labels (decimal, octal, hex): what inet_aton would read as an address, such as
# 2130706433 or 127.1 or 0x7f.1.  No real host name is all-numeric (no TLD is).
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?")


def _literal(host: str) -> Address | None:
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str | URL, policy: NetPolicy) -> None:
    """Refuse (``AddressRefused``) a URL whose scheme is not http or https, whose host matches
    none of ``allow_hosts``, or whose host is an IP address ``refusal()`` refuses.

    aiohttp does not pass IP literals to the resolver, so this is their only check; a host
    name is checked again, address by address, by ``GuardedResolver`` when it connects.
    """
    try:
        parsed = URL(url) if isinstance(url, str) else url
        host = (parsed.raw_host or "").lower()
        scheme = parsed.scheme.lower()
    except (ValueError, TypeError):
        raise AddressRefused("refused a URL that does not parse") from None
    shown = redact_url(str(parsed))
    if scheme not in ("http", "https"):
        raise AddressRefused(f"refused {shown}: only http and https URLs are followed")
    if not host:
        raise AddressRefused(f"refused {shown}: the URL has no host")
    if not policy.allows_host(host):
        raise AddressRefused(f"refused {shown}: the host {host} matches none of allow_hosts")
    literal = _literal(host)
    if literal is None:
        if _NUMERIC_HOST.fullmatch(host):
            raise AddressRefused(
                f"refused {shown}: {host} is an IPv4 address in a non-standard form;"
                " write it as four decimal numbers"
            )
        return
    verdict = _verdict(literal, policy)
    if verdict is not None:
        raise AddressRefused(f"refused {shown}: {verdict.reason}{_hint(verdict)}")


# --------------------------------------------------------------------------- resolving


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's ``ThreadedResolver`` by default), then refuses the
    host (``AddressRefused``) if it matches none of ``allow_hosts`` or if ANY address it
    resolves to is refused, naming the host and the address.

    All or nothing, rather than dropping the refused addresses: a name that resolves to an
    internal address is suspect as a whole.  A result that is not an IP address is refused
    too, since the socket would resolve it again, unchecked.  An ``inner`` resolver passed in
    stays the caller's to close.
    """

    def __init__(self, policy: NetPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner
        self._owns_inner = inner is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not self.policy.allows_host(host):
            raise AddressRefused(f"refused {host}: it matches none of allow_hosts")
        if self._inner is None:
            # Made here, not in __init__: ThreadedResolver wants the running loop.
            self._inner = aiohttp.ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        if not results:
            # An OSError, so aiohttp reports it as the DNS failure it is.
            raise OSError(f"{host} resolved to no address")
        for result in results:
            address = _literal(result["host"])
            if address is None:
                raise AddressRefused(
                    f"refused {host}: the resolver answered {result['host'][:80]!r},"
                    " which is not an IP address"
                )
            verdict = _verdict(address, self.policy)
            if verdict is not None:
                raise AddressRefused(f"refused {host}: {verdict.reason}{_hint(verdict)}")
        return results

    async def close(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None and self._owns_inner:
            await inner.close()


# Connectors made by guarded_connector, so get_following can tell a guarded session.
_GUARDED: weakref.WeakSet[aiohttp.BaseConnector] = weakref.WeakSet()


def guarded_connector(policy: NetPolicy, **kwargs: Any) -> aiohttp.TCPConnector:
    """A ``TCPConnector`` whose every connection goes through ``GuardedResolver(policy)``.

    ``resolver=`` in ``kwargs`` is the inner resolver; the rest goes to ``TCPConnector``.
    Call it on the running event loop.  Check literal IP hosts with ``check_url``.
    """
    inner = kwargs.pop("resolver", None)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy, inner), **kwargs)
    _GUARDED.add(connector)
    return connector


# --------------------------------------------------------------------------- redirects

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Credentials the caller meant for the first origin only.
_ORIGIN_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.raw_host or "").lower(), url.port


def _without_credentials(kwargs: dict[str, Any]) -> dict[str, Any]:
    headers = kwargs.get("headers")
    if not headers:
        return kwargs
    kept = {k: v for k, v in dict(headers).items() if str(k).lower() not in _ORIGIN_HEADERS}
    return {**kwargs, "headers": kept}


async def get_following(
    session: aiohttp.ClientSession,
    url: str | URL,
    policy: NetPolicy,
    *,
    max_redirects: int = 3,
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    """GET ``url``, following up to ``max_redirects`` redirects (301, 302, 303, 307, 308) by
    hand; returns the final, non-redirect response, which the caller must release.

    Every hop goes through ``check_url`` (its ``Location`` resolved against the hop before
    it), and through the session's ``GuardedResolver`` when it connects.  Raises
    ``AddressRefused`` for a refused hop; ``RedirectRefused`` (code ``file_refused``) for one
    redirect more than ``max_redirects``, a redirect from https to http, or one without a
    usable ``Location``.  ``session`` must have been made with ``guarded_connector`` and
    ``trust_env=False``.  ``kwargs`` (timeouts, headers...) go to every ``session.get``, but
    ``params`` apply to ``url`` only, and ``Authorization`` and ``Cookie`` headers go to the
    first origin only.
    """
    if session.connector not in _GUARDED:
        raise TypeError("get_following needs a session made with guarded_connector()")
    if session.trust_env or "proxy" in kwargs:
        raise TypeError("get_following cannot guard requests sent through a proxy")
    try:
        current = URL(url) if isinstance(url, str) else url
        # params belong to the first URL, not to every hop: merged in here, as aiohttp would.
        params = kwargs.pop("params", None)
        if params:
            current = current.extend_query(params)
    except (ValueError, TypeError):
        raise AddressRefused("refused a URL that does not parse") from None
    first = _origin(current)
    crossed = False  # once off the first origin, credentials stay off, as in browsers
    hops = 0
    while True:
        check_url(current, policy)
        crossed = crossed or _origin(current) != first
        options = _without_credentials(kwargs) if crossed else kwargs
        response = await session.get(current, allow_redirects=False, **options)
        if response.status not in _REDIRECTS:
            return response
        status = response.status
        location = response.headers.get("location")
        response.release()
        if hops >= max_redirects:
            raise RedirectRefused(
                f"{redact_url(str(current))} answered {status}, a redirect after {hops} already"
                f" followed; at most {max_redirects} are followed"
            )
        current = _next_hop(current, status, location)
        hops += 1


def _next_hop(current: URL, status: int, location: str | None) -> URL:
    """Where a redirect from ``current`` leads; ``RedirectRefused`` if it leads nowhere
    usable or from https down to http.  The target still has to pass ``check_url``."""
    shown = redact_url(str(current))
    if not location:
        raise RedirectRefused(f"{shown} answered {status} without a Location")
    try:
        target = current.join(URL(location))
    except (ValueError, TypeError):
        raise RedirectRefused(
            f"{shown} answered {status} with a Location that does not parse"
        ) from None
    if current.scheme.lower() == "https" and target.scheme.lower() != "https":
        raise RedirectRefused(
            f"{shown} redirected from https to {redact_url(str(target))};"
            " leaving https is never followed"
        )
    return target
