"""Which web results a person wants read: domains to keep to and domains to avoid, before any fetch.

A domain covers its subdomains (`nature.com` covers `www.nature.com`), never look-alikes
(`evilnature.com`). Names compare in their ASCII (IDNA) form, so `bücher.de` and `xn--bcher-kva.de` match.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sala_report.retrieval.netguard import parse_ip


def normalise_domain(entry: str) -> str:
    """`https://WWW.Example.org/path`, `*.example.org` or `example.org.` as `example.org`-style names.

    Raises ValueError naming the entry when it holds no host name."""
    text = entry.strip().lower()
    host = urlsplit(text).hostname if "://" in text else text.split("/", 1)[0]
    host = (host or "").removeprefix("*.").strip(".")
    if parse_ip(host) is not None:
        return host.strip("[]")
    if ":" in host:
        host = host.rsplit(":", 1)[0]
    if not host or any(not label for label in host.split(".")) or any(c in host for c in " @?#\\"):
        raise ValueError(f"expected a domain such as example.org, got {entry!r}")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"expected a domain such as example.org, got {entry!r} ({e})") from e


@dataclass(frozen=True)
class DomainFilter:
    """Keep results on `include` domains (all when empty) and drop those on `exclude`; exclude wins."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: list[str] | tuple[str, ...] = (), exclude: list[str] | tuple[str, ...] = ()) -> DomainFilter:
        """From the person's entries (URLs, `*.` prefixes, any case); ValueError on one that is no domain."""
        return cls(
            tuple(dict.fromkeys(map(normalise_domain, include))), tuple(dict.fromkeys(map(normalise_domain, exclude)))
        )

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude)

    def allows(self, url: str) -> bool:
        host = _host(url)
        if host is None:
            return False
        if any(_within(host, d) for d in self.exclude):
            return False
        return not self.include or any(_within(host, d) for d in self.include)


def _host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    if parse_ip(host) is not None:
        return host
    try:
        return host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _within(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)
