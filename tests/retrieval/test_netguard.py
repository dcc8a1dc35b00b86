"""Private-address refusal: loopback, private, link-local, IPv6 loopback, names resolving to them, and
redirects into them are refused by default, before any connection is made."""

from __future__ import annotations

import ipaddress

import pytest

from sala_report.retrieval import FetchConfig, Fetcher
from sala_report.retrieval.errors import AddressRefused
from sala_report.retrieval.netguard import checked_addresses, is_public_address, system_resolver

GUARDED = dict(connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=3.0)


@pytest.mark.parametrize(
    "address,public",
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        # IPv6 forms that carry an IPv4 address are judged by that address
        ("::127.0.0.1", False),
        ("::10.0.0.1", False),  # IPv4-compatible
        ("64:ff9b::7f00:1", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b::808:808", True),  # NAT64
        ("2002:7f00:1::", False),
        ("2002:a00:1::1", False),
        ("2002:808:808::1", True),  # 6to4
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_address_classification(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/article",
        "http://10.0.0.7/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/article",
        "http://[::ffff:127.0.0.1]:{port}/article",
        "http://[::127.0.0.1]:{port}/article",
        "http://[64:ff9b::7f00:1]:{port}/article",
        "http://[2002:7f00:1::1]:{port}/article",
        "http://localhost:{port}/article",
        "http://0.0.0.0:{port}/article",
    ],
)
def test_private_targets_are_refused_without_connecting(server, url):
    url = url.format(port=server.server_address[1])
    before = len(server.hits)
    (result,) = Fetcher(FetchConfig(**GUARDED)).fetch_all([url])
    assert result.failure == "refused", result.error
    assert "--allow-private-addresses" in result.error
    assert len(server.hits) == before  # nothing reached the server


def test_hostname_resolving_to_loopback_names_the_address(server):
    (result,) = Fetcher(FetchConfig(**GUARDED)).fetch_all([f"http://localhost:{server.server_address[1]}/"])
    assert "localhost resolves to" in result.error and "loopback" in result.error


@pytest.mark.parametrize("url", ["ftp://example.com/file.txt", "file:///etc/passwd", "gopher://example.com/"])
def test_non_http_schemes_are_refused(url):
    (result,) = Fetcher(FetchConfig(**GUARDED)).fetch_all([url])
    assert result.failure == "refused"
    assert "only http and https" in result.error


def _public_test_fetcher(answers: dict[str, list[str]]) -> Fetcher:
    """A fetcher whose DNS answers `answers`, and which treats 127.0.0.2 (the second fixture server) as
    a public address: the stand-in for a real web server on the internet."""

    def resolver(host: str, port: int) -> list[str]:
        return answers[host] if host in answers else system_resolver(host, port)

    def is_public(ip) -> bool:
        return str(ip) == "127.0.0.2" or is_public_address(ip)

    return Fetcher(FetchConfig(**GUARDED), resolver=resolver, is_public=is_public)


def test_public_host_is_read_through_the_checked_address(public_server):
    fetcher = _public_test_fetcher({"public.test": ["127.0.0.2"]})
    port = public_server.server_address[1]
    (result,) = fetcher.fetch_all([f"http://public.test:{port}/article"])
    assert result.ok, result.error
    assert b"railway embankments" in result.body
    assert public_server.headers_seen["/article"]["Host"] == f"public.test:{port}"


def test_redirect_from_public_host_to_loopback_is_refused(server, public_server):
    fetcher = _public_test_fetcher({"public.test": ["127.0.0.2"]})
    port = public_server.server_address[1]
    before = list(server.hits)
    (result,) = fetcher.fetch_all([f"http://public.test:{port}/to-private"])
    assert result.failure == "refused", result.error
    assert "127.0.0.1" in result.error
    assert result.final_url == server.base + "/article"
    assert server.hits == before  # the private server was never contacted


def test_redirect_to_cloud_metadata_address_is_refused(public_server):
    fetcher = _public_test_fetcher({"public.test": ["127.0.0.2"]})
    (result,) = fetcher.fetch_all([f"http://public.test:{public_server.server_address[1]}/to-metadata"])
    assert result.failure == "refused"
    assert "169.254.169.254" in result.error and "link-local" in result.error


def test_dns_answer_mixing_public_and_private_is_refused(public_server):
    fetcher = _public_test_fetcher({"mixed.test": ["127.0.0.2", "127.0.0.1"]})
    (result,) = fetcher.fetch_all([f"http://mixed.test:{public_server.server_address[1]}/article"])
    assert result.failure == "refused"


@pytest.mark.parametrize("answer", ["::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe"])
def test_dns_answer_embedding_a_private_ipv4_is_refused(answer):
    with pytest.raises(AddressRefused, match="in IPv6 form"):
        checked_addresses("embedded.test", 80, resolver=lambda host, port: [answer], allow_private=False)


def test_checked_addresses_raises_for_private_and_passes_when_allowed():
    def resolver(host, port):
        return ["10.0.0.5"]

    with pytest.raises(AddressRefused):
        checked_addresses("intranet.test", 80, resolver=resolver, allow_private=False)
    assert checked_addresses("intranet.test", 80, resolver=resolver, allow_private=True) == ["10.0.0.5"]


def test_allow_private_addresses_reads_loopback(server):
    (result,) = Fetcher(FetchConfig(allow_private_addresses=True, **GUARDED)).fetch_all([server.base + "/article"])
    assert result.ok
