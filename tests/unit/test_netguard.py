"""The SSRF guard: the address table, URLs, the resolver, and real aiohttp requests.

The requests go to a real aiohttp server on 127.0.0.1 through a real guarded ``ClientSession``;
nothing of aiohttp or of the guard is stubbed, except the inner resolver in the resolver's
own unit tests (so that any address can be "resolved").
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError
from yarl import URL

from handlers.errors import FileUnavailable, PermanentSinkError
from handlers.netguard import (
    AddressRefused,
    GuardedResolver,
    NetPolicy,
    RedirectRefused,
    _next_hop,
    check_url,
    get_following,
    guarded_connector,
    refusal,
)

OPEN = NetPolicy()
LOOPBACK_ONE = NetPolicy(allow_networks=("127.0.0.1/32",))


def addr(text: str) -> IPv4Address | IPv6Address:
    return ip_address(text)


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.255.1.2", "0.0.0.0/8"),
        ("10.0.0.5", "10.0.0.5 is a private address (10.0.0.0/8)"),
        ("172.16.0.1", "private address (172.16.0.0/12)"),
        ("172.31.255.254", "private address (172.16.0.0/12)"),
        ("192.168.1.1", "private address (192.168.0.0/16)"),
        ("127.0.0.1", "loopback address (127.0.0.0/8)"),
        ("127.255.255.254", "loopback"),
        ("169.254.1.1", "link-local address (169.254.0.0/16)"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "100.64.0.0/10"),
        ("224.0.0.1", "multicast address (224.0.0.0/4)"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved address (240.0.0.0/4)"),
        ("255.255.255.255", "the broadcast address"),
        ("192.0.0.8", "IETF protocol assignments address (192.0.0.0/24)"),
        ("192.0.2.10", "TEST-NET-1 documentation address (192.0.2.0/24)"),
        ("198.51.100.7", "TEST-NET-2"),
        ("203.0.113.9", "TEST-NET-3"),
        ("198.18.0.1", "benchmarking address (198.18.0.0/15)"),
        ("198.19.255.255", "benchmarking"),
        ("192.88.99.1", "6to4 relay anycast"),
        ("::", "the unspecified address (::/128)"),
        ("::1", "the loopback address (::1/128)"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "private (unique local) address (fc00::/7)"),
        ("fe80::1", "link-local address (fe80::/10)"),
        ("fe80::1%2", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast address (ff00::/8)"),
        ("2001:db8::1", "documentation address (2001:db8::/32)"),
        ("3fff::1", "documentation address (3fff::/20)"),
        ("2001:2::1", "benchmarking"),
        ("100::1", "discard-only"),
        ("4000::1", "outside 2000::/3"),
    ],
)
def test_internal_addresses_are_refused_with_a_reason(address: str, words: str) -> None:
    reason = refusal(addr(address), OPEN)
    assert reason is not None, address
    assert words in reason
    assert reason.startswith(str(addr(address)))


@pytest.mark.parametrize(
    ("address", "embedded", "words"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1", "IPv4-mapped"),
        ("::ffff:10.1.2.3", "10.1.2.3", "IPv4-mapped"),
        ("::127.0.0.1", "127.0.0.1", "IPv4-compatible"),
        ("::ffff:0:192.168.0.1", "192.168.0.1", "IPv4-translated"),
        ("2002:7f00:1::1", "127.0.0.1", "6to4"),
        ("2002:a9fe:0101::", "169.254.1.1", "6to4"),
        ("64:ff9b::7f00:1", "127.0.0.1", "NAT64"),
        ("64:ff9b::a00:5", "10.0.0.5", "NAT64"),
        ("64:ff9b:1::7f00:1", "127.0.0.1", "local-use NAT64"),
        # Teredo: server 65.54.227.120 (public), client 192.0.2.45 (obfuscated in the address).
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45", "Teredo"),
        # Teredo: server 10.0.0.1.
        ("2001:0:a00:1::1", "10.0.0.1", "Teredo"),
    ],
)
def test_ipv6_forms_of_internal_ipv4_are_refused_naming_both(
    address: str, embedded: str, words: str
) -> None:
    reason = refusal(addr(address), OPEN)
    assert reason is not None
    assert str(addr(address)) in reason
    assert embedded in reason
    assert words in reason
    assert refusal(addr(embedded), OPEN) is not None


def test_local_use_nat64_is_refused_even_when_it_carries_a_public_address() -> None:
    reason = refusal(addr("64:ff9b:1::808:808"), OPEN)
    assert reason is not None
    assert "local-use NAT64" in reason
    assert "not globally reachable" in reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above
        "172.32.0.1",  # just above 172.16.0.0/12
        "198.20.0.1",  # just above 198.18.0.0/15
        "223.255.255.254",  # just below multicast
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: 65.54.227.120 and 8.8.8.8
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(addr(address), OPEN) is None


METADATA = [
    "169.254.169.254",
    "169.254.170.2",
    "fd00:ec2::254",
    "100.100.100.200",
    "168.63.129.16",
    "192.0.0.192",
]


@pytest.mark.parametrize("address", METADATA)
def test_cloud_metadata_is_refused_even_inside_allow_networks(address: str) -> None:
    everything = NetPolicy(allow_networks=("0.0.0.0/0", "::/0"))
    own = NetPolicy(allow_networks=(f"{address}/{128 if ':' in address else 32}",))
    for policy in (OPEN, everything, own):
        reason = refusal(addr(address), policy)
        assert reason is not None
        assert "cloud metadata" in reason
        assert "allow_networks cannot allow it" in reason


def test_azure_wireserver_is_refused_although_it_is_a_public_address() -> None:
    reason = refusal(addr("168.63.129.16"), OPEN)
    assert reason is not None and "Azure WireServer" in reason
    assert refusal(addr("168.63.129.15"), OPEN) is None


@pytest.mark.parametrize(
    "address", ["::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a83f:8110::1"]
)
def test_cloud_metadata_in_an_ipv6_form_is_refused_even_inside_allow_networks(
    address: str,
) -> None:
    everything = NetPolicy(allow_networks=("0.0.0.0/0", "::/0"))
    reason = refusal(addr(address), everything)
    assert reason is not None
    assert "cloud metadata" in reason


def test_allow_networks_opts_in_exactly_what_it_names() -> None:
    assert refusal(addr("127.0.0.1"), LOOPBACK_ONE) is None
    assert refusal(addr("127.0.0.2"), LOOPBACK_ONE) is not None
    assert refusal(addr("::1"), LOOPBACK_ONE) is not None
    private = NetPolicy(allow_networks=("10.0.0.0/8", "fd00::/8"))
    assert refusal(addr("10.20.30.40"), private) is None
    assert refusal(addr("fd00::5"), private) is None
    assert refusal(addr("192.168.0.1"), private) is not None
    assert refusal(addr("fc00::5"), private) is not None


def test_an_opted_in_address_is_opted_in_in_the_forms_that_reach_it() -> None:
    # Mapped, compatible and NAT64 forms connect to the IPv4 host itself...
    assert refusal(addr("::ffff:127.0.0.1"), LOOPBACK_ONE) is None
    assert refusal(addr("::127.0.0.1"), LOOPBACK_ONE) is None
    assert refusal(addr("64:ff9b::7f00:1"), LOOPBACK_ONE) is None
    assert refusal(addr("::ffff:127.0.0.2"), LOOPBACK_ONE) is not None
    # ...a 6to4 tunnel does not: its IPv4 address is a tunnel end.
    assert refusal(addr("2002:7f00:1::1"), LOOPBACK_ONE) is not None
    # The IPv6 form itself can be opted in.
    sixtofour = NetPolicy(allow_networks=("2002:7f00:1::/48",))
    assert refusal(addr("2002:7f00:1::1"), sixtofour) is None


# --------------------------------------------------------------------------- the policy


def test_policy_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError):
        NetPolicy(allow_network=("127.0.0.1/32",))  # type: ignore[call-arg]
    policy = NetPolicy(allow_networks=["127.0.0.1"], allow_hosts=["*.Example.COM."])
    with pytest.raises(ValidationError):
        policy.allow_hosts = ()  # type: ignore[misc]
    assert [str(n) for n in policy.allow_networks] == ["127.0.0.1/32"]
    assert policy.allow_hosts == ("*.example.com",)


@pytest.mark.parametrize("value", ["10.0.0.1/8", "not-a-network", "300.0.0.0/8", ""])
def test_bad_networks_are_refused_with_an_example(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NetPolicy(allow_networks=(value,))
    assert "127.0.0.1/32" in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("https://*.example.com", "without a scheme"),
        ("example.com/path", "without a path"),
        ("example.com:443", "without a port"),
        ("", "cannot be empty"),
        ("exämple.com", "xn--"),
        ("exa mple.com", "letters, digits"),
        ("user@example.com", "letters, digits"),
    ],
)
def test_bad_host_patterns_say_why(pattern: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NetPolicy(allow_hosts=(pattern,))
    assert words in str(caught.value)


def test_host_patterns_match_case_insensitively() -> None:
    policy = NetPolicy(allow_hosts=("*.blob.core.windows.net", "files.example.com"))
    assert policy.allows_host("acct.blob.core.windows.net")
    assert policy.allows_host("ACCT.Blob.Core.Windows.Net.")
    assert policy.allows_host("files.example.com")
    assert not policy.allows_host("blob.core.windows.net")
    assert not policy.allows_host("acct.blob.core.windows.net.evil.test")
    assert not policy.allows_host("other.example.com")
    assert OPEN.allows_host("anything.test")


# --------------------------------------------------------------------------- check_url

SAS = "sv=2024-01-01&se=2030-01-01T00%3A00%3A00Z&sig=S3CRETsignature"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "data:,x"]
)
def test_check_url_refuses_other_schemes(url: str) -> None:
    with pytest.raises(AddressRefused, match="only http and https"):
        check_url(url, OPEN)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"http://127.0.0.1:8080/x?{SAS}", "127.0.0.1 is a loopback address"),
        (f"https://10.0.0.5/x?{SAS}", "10.0.0.5 is a private address"),
        ("http://[::1]/", "::1 is the loopback address"),
        ("http://[::ffff:127.0.0.1]/", "embedding 127.0.0.1"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ],
)
def test_check_url_refuses_internal_literals(url: str, words: str) -> None:
    with pytest.raises(AddressRefused) as caught:
        check_url(url, OPEN)
    message = str(caught.value)
    assert words in message
    assert "S3CRET" not in message
    assert caught.value.code == "address_refused"
    assert isinstance(caught.value, PermanentSinkError)


def test_check_url_says_how_to_opt_in_except_for_metadata() -> None:
    with pytest.raises(AddressRefused, match="add it to allow_networks"):
        check_url("http://127.0.0.1/", OPEN)
    with pytest.raises(AddressRefused) as caught:
        check_url("http://169.254.169.254/", OPEN)
    assert "add it to allow_networks" not in str(caught.value)


def test_check_url_lets_public_and_opted_in_hosts_through() -> None:
    check_url(f"https://acct.blob.core.windows.net/c/f.pdf?{SAS}", OPEN)
    check_url("https://8.8.8.8/", OPEN)
    check_url("http://[2606:4700:4700::1111]/", OPEN)
    check_url(URL("http://127.0.0.1:9/"), LOOPBACK_ONE)


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1", "017700000001", "0x7f000001"]
)
def test_check_url_refuses_non_standard_ipv4_forms(host: str) -> None:
    with pytest.raises(AddressRefused, match="non-standard form"):
        check_url(f"http://{host}/", LOOPBACK_ONE)


def test_check_url_applies_allow_hosts() -> None:
    policy = NetPolicy(allow_hosts=("*.blob.core.windows.net",))
    check_url("https://acct.blob.core.windows.net/x", policy)
    with pytest.raises(AddressRefused, match="matches none of allow_hosts") as caught:
        check_url(f"https://evil.example/x?{SAS}", policy)
    assert "sig=REDACTED" in str(caught.value)
    assert "S3CRET" not in str(caught.value)
    with pytest.raises(AddressRefused, match="matches none of allow_hosts"):
        check_url("https://8.8.8.8/x", policy)


# --------------------------------------------------------------------------- redirect hops


def test_a_hop_resolves_location_against_the_current_url() -> None:
    here = URL("https://a.example/files/one?x=1")
    assert _next_hop(here, 302, "two") == URL("https://a.example/files/two")
    assert _next_hop(here, 301, "/root") == URL("https://a.example/root")
    assert _next_hop(here, 307, "//b.example/p") == URL("https://b.example/p")
    assert _next_hop(URL("http://a.example/"), 308, "https://b.example/") == URL(
        "https://b.example/"
    )


@pytest.mark.parametrize(
    "location", ["http://a.example/f", "http://b.example/f?sig=S3CRET", "ftp://a.example/f"]
)
def test_a_hop_from_https_to_http_is_refused(location: str) -> None:
    with pytest.raises(RedirectRefused, match="from https to") as caught:
        _next_hop(URL(f"https://a.example/f?{SAS}"), 302, location)
    assert "S3CRET" not in str(caught.value)
    assert caught.value.code == "file_refused"
    assert isinstance(caught.value, FileUnavailable)
    # The same hop from http is not a downgrade (check_url still judges its target).
    assert _next_hop(URL("http://a.example/f"), 302, location) == URL(location)


def test_a_hop_without_location_is_refused() -> None:
    with pytest.raises(RedirectRefused, match="without a Location"):
        _next_hop(URL("https://a.example/"), 302, None)
    with pytest.raises(RedirectRefused, match="without a Location"):
        _next_hop(URL("https://a.example/"), 302, "")


# --------------------------------------------------------------------------- the resolver


class StubResolver(AbstractResolver):
    """Answers every name with fixed addresses and records the names it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_resolver_passes_public_answers_unchanged() -> None:
    stub = StubResolver("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    results = await GuardedResolver(OPEN, stub).resolve("example.com", 443)
    assert [r["host"] for r in results] == list(stub.addresses)
    assert stub.asked == ["example.com"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answers", "refused"),
    [
        (("10.0.0.5",), "10.0.0.5"),
        (("93.184.215.14", "127.0.0.1"), "127.0.0.1"),
        (("2606:4700::1", "::ffff:169.254.169.254"), "169.254.169.254"),
        (("fd00:ec2::254",), "fd00:ec2::254"),
    ],
)
async def test_resolver_refuses_if_any_answer_is_refused(
    answers: tuple[str, ...], refused: str
) -> None:
    with pytest.raises(AddressRefused) as caught:
        await GuardedResolver(OPEN, StubResolver(*answers)).resolve("rebind.example", 80)
    message = str(caught.value)
    assert "rebind.example" in message
    assert refused in message


@pytest.mark.anyio
async def test_resolver_refuses_an_answer_that_is_no_address() -> None:
    with pytest.raises(AddressRefused, match="not an IP address"):
        await GuardedResolver(OPEN, StubResolver("localhost")).resolve("x.example", 80)


@pytest.mark.anyio
async def test_resolver_reports_no_answer_as_a_dns_failure() -> None:
    with pytest.raises(OSError, match="no address"):
        await GuardedResolver(OPEN, StubResolver()).resolve("x.example", 80)


@pytest.mark.anyio
async def test_resolver_does_not_look_up_hosts_outside_allow_hosts() -> None:
    stub = StubResolver("93.184.215.14")
    policy = NetPolicy(allow_hosts=("*.example.com",))
    with pytest.raises(AddressRefused, match="matches none of allow_hosts"):
        await GuardedResolver(policy, stub).resolve("evil.test", 80)
    assert stub.asked == []
    await GuardedResolver(policy, stub).resolve("www.example.com", 80)
    assert stub.asked == ["www.example.com"]


@pytest.mark.anyio
async def test_resolver_opt_in_applies_to_resolved_addresses() -> None:
    results = await GuardedResolver(LOOPBACK_ONE, StubResolver("127.0.0.1")).resolve("l", 1)
    assert [r["host"] for r in results] == ["127.0.0.1"]


# --------------------------------------------------------------------------- real requests


@dataclass
class Server:
    """A real aiohttp server on 127.0.0.1 that records what it is asked."""

    port: int = 0
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    """(path with query, Authorization header) of every request."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.seen.append((request.path_qs, request.headers.get("authorization")))
        if request.path.startswith("/hops/"):
            left = int(request.path.rsplit("/", 1)[1])
            if left > 0:
                raise web.HTTPFound(f"/hops/{left - 1}")
        if request.path == "/to":
            raise web.HTTPTemporaryRedirect(request.query["where"])
        return web.Response(text=f"ok {request.path}")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


async def guarded_session(policy: NetPolicy) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=guarded_connector(policy), trust_env=False)


@pytest.mark.anyio
async def test_a_local_literal_is_refused_without_opt_in(server: Server) -> None:
    async with await guarded_session(OPEN) as session:
        with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await get_following(session, f"{server.url}/x", OPEN)
    assert server.seen == []


@pytest.mark.anyio
async def test_a_local_literal_is_reached_with_opt_in(server: Server) -> None:
    async with await guarded_session(LOOPBACK_ONE) as session:
        response = await get_following(session, f"{server.url}/x", LOOPBACK_ONE)
        try:
            assert response.status == 200
            assert await response.text() == "ok /x"
        finally:
            response.release()
    assert server.seen == [("/x", None)]


@pytest.mark.anyio
async def test_localhost_is_refused_by_the_resolver_through_session_get(
    server: Server,
) -> None:
    # Straight through aiohttp's session.get: the resolver's error arrives unchanged (aiohttp
    # wraps only OSErrors), and nothing reaches the server.
    async with await guarded_session(OPEN) as session:
        with pytest.raises(AddressRefused) as caught:
            await session.get(f"http://localhost:{server.port}/x")
        assert type(caught.value) is AddressRefused
        assert "refused localhost" in str(caught.value)
        with pytest.raises(AddressRefused, match="refused localhost"):
            await get_following(session, f"http://localhost:{server.port}/x", OPEN)
    assert server.seen == []


@pytest.mark.anyio
async def test_a_redirect_to_a_refused_address_is_not_followed(server: Server) -> None:
    # 127.0.0.2 is loopback too, but outside the opted-in 127.0.0.1/32: refused before any
    # connection to it is tried (nothing listens there; the error would differ if one were).
    where = f"http://127.0.0.2:{server.port}/inner?sig=S3CRET"
    async with await guarded_session(LOOPBACK_ONE) as session:
        with pytest.raises(AddressRefused) as caught:
            await get_following(session, f"{server.url}/to", LOOPBACK_ONE, params={"where": where})
    message = str(caught.value)
    assert "127.0.0.2 is a loopback address" in message
    assert "S3CRET" not in message
    assert [path.split("?")[0] for path, _ in server.seen] == ["/to"]


@pytest.mark.anyio
async def test_a_redirect_to_a_name_that_resolves_to_a_refused_address(server: Server) -> None:
    # The first hop is an IP literal (never resolved); the stub answers for the name of the
    # second: an address outside the opt-in, so the resolver refuses it.
    stub = StubResolver("127.0.0.2")
    connector = guarded_connector(LOOPBACK_ONE, resolver=stub)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        with pytest.raises(AddressRefused, match=r"refused rebind\.test: 127\.0\.0\.2"):
            await get_following(
                session,
                f"{server.url}/to",
                LOOPBACK_ONE,
                params={"where": f"http://rebind.test:{server.port}/inner"},
            )
    assert stub.asked == ["rebind.test"]
    assert [path.split("?")[0] for path, _ in server.seen] == ["/to"]


@pytest.mark.anyio
async def test_three_redirects_are_followed_and_a_fourth_is_refused(server: Server) -> None:
    async with await guarded_session(LOOPBACK_ONE) as session:
        response = await get_following(session, f"{server.url}/hops/3", LOOPBACK_ONE)
        try:
            assert response.status == 200
            assert str(response.url).endswith("/hops/0")
        finally:
            response.release()
        assert [p for p, _ in server.seen] == ["/hops/3", "/hops/2", "/hops/1", "/hops/0"]
        server.seen.clear()
        with pytest.raises(RedirectRefused, match="at most 3 are followed") as caught:
            await get_following(session, f"{server.url}/hops/4", LOOPBACK_ONE)
        assert caught.value.code == "file_refused"
        assert [p for p, _ in server.seen] == ["/hops/4", "/hops/3", "/hops/2", "/hops/1"]
        server.seen.clear()
        response = await get_following(
            session, f"{server.url}/hops/1", LOOPBACK_ONE, max_redirects=1
        )
        response.release()
        with pytest.raises(RedirectRefused):
            await get_following(session, f"{server.url}/hops/2", LOOPBACK_ONE, max_redirects=1)


@pytest.mark.anyio
async def test_credentials_go_to_the_first_origin_only(server: Server) -> None:
    both = NetPolicy(allow_networks=("127.0.0.1/32", "::1/128"))
    headers = {"Authorization": "Bearer first-origin-only"}
    async with await guarded_session(both) as session:
        response = await get_following(
            session,
            f"{server.url}/to",
            both,
            params={"where": f"http://localhost:{server.port}/other"},
            headers=headers,
        )
        response.release()
    assert response.status == 200
    assert server.seen[0][1] == "Bearer first-origin-only"
    assert server.seen[1] == ("/other", None), "params went to the first URL only"


@pytest.mark.anyio
async def test_get_following_needs_a_guarded_session_without_proxy(server: Server) -> None:
    async with aiohttp.ClientSession(trust_env=False) as plain:
        with pytest.raises(TypeError, match="guarded_connector"):
            await get_following(plain, f"{server.url}/x", LOOPBACK_ONE)
    async with aiohttp.ClientSession(
        connector=guarded_connector(LOOPBACK_ONE), trust_env=True
    ) as proxied:
        with pytest.raises(TypeError, match="proxy"):
            await get_following(proxied, f"{server.url}/x", LOOPBACK_ONE)
    assert server.seen == []


@pytest.mark.anyio
async def test_guarded_connector_passes_options_on() -> None:
    inner = StubResolver("127.0.0.1")
    connector = guarded_connector(LOOPBACK_ONE, limit=7, resolver=inner)
    try:
        assert connector.limit == 7
        async with aiohttp.ClientSession(connector=connector, connector_owner=False) as s:
            # The inner resolver answers for every name: "anything" is 127.0.0.1 here.
            with pytest.raises(aiohttp.ClientConnectorError):
                await s.get("http://anything.example:1/")
        assert inner.asked == ["anything.example"]
    finally:
        await connector.close()
