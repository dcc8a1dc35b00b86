"""Reading web pages with httpx: bounded in time, size, types, redirects and reachable addresses.

Every fetch ends in a `FetchResult`: the body, or a failure kind and a message a person can read.
Nothing here raises for network trouble.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from sala_report.retrieval.errors import AddressRefused
from sala_report.retrieval.extract import MAX_HTML_CHARS
from sala_report.retrieval.netguard import (
    IPAddress,
    Resolver,
    check_scheme,
    checked_addresses,
    is_public_address,
    parse_ip,
    system_resolver,
)

T = TypeVar("T")


def _user_agent() -> str:
    try:
        version = metadata.version("sala-report")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"sala-report/{version} (local research assistant; reads pages a person asked about)"


DEFAULT_USER_AGENT = _user_agent()

# media type -> the extractor that reads it
READABLE_TYPES = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
}
REDIRECT_CODES = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class FetchConfig:
    """Field names match the app's `fetch` settings section, so the app can pass that section through."""

    allow_private_addresses: bool = False
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0
    total_timeout_s: float = 45.0
    max_bytes: int = 15_000_000
    max_redirects: int = 5
    per_host: int = 2
    concurrency: int = 8
    user_agent: str = DEFAULT_USER_AGENT
    # Extracting a page: the HTML handed to trafilatura after scripts and styles are dropped, and a time
    # limit past which the article extraction is stopped and the page's plain text kept.
    max_html_chars: int = MAX_HTML_CHARS
    extract_timeout_s: float = 60.0


@dataclass(frozen=True)
class FetchResult:
    url: str  # as requested
    final_url: str  # after redirects
    status_code: int | None = None
    content_type: str | None = None  # a key of READABLE_TYPES
    charset: str | None = None  # as the server declared it
    body: bytes = b""
    # refused, invalid_url, timeout, network, http, too_large, content_type, redirects, cancelled
    failure: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def kind(self) -> str | None:
        return READABLE_TYPES.get(self.content_type or "")


class _Failed(Exception):
    def __init__(self, failure: str, message: str):
        super().__init__(message)
        self.failure = failure


class Fetcher:
    """Concurrent page fetcher. `resolver` and `is_public` are injectable so tests can stage DNS answers."""

    def __init__(
        self,
        config: FetchConfig | None = None,
        *,
        resolver: Resolver = system_resolver,
        is_public: Callable[[IPAddress], bool] = is_public_address,
    ):
        self.config = config or FetchConfig()
        self._resolver = resolver
        self._is_public = is_public

    def fetch_all(
        self,
        urls: Iterable[str],
        *,
        cancel: threading.Event | None = None,
        on_result: Callable[[FetchResult], None] | None = None,
    ) -> list[FetchResult]:
        """Blocking form of `fetch_many`, usable from threads that have no event loop running."""
        return run_blocking(lambda: self.fetch_many(urls, cancel=cancel, on_result=on_result))

    async def fetch_many(
        self,
        urls: Iterable[str],
        *,
        cancel: threading.Event | None = None,
        on_result: Callable[[FetchResult], None] | None = None,
    ) -> list[FetchResult]:
        """Fetch every URL (results in the same order); `cancel` being set ends the rest as `cancelled`."""
        urls = list(urls)
        cfg = self.config
        timeout = httpx.Timeout(
            connect=cfg.connect_timeout_s,
            read=cfg.read_timeout_s,
            write=cfg.read_timeout_s,
            pool=cfg.total_timeout_s,
        )
        # No keep-alive: a pooled connection is keyed by IP, and must not carry one host's TLS session
        # into another host's request. trust_env=False: a proxy would hide the address we checked.
        limits = httpx.Limits(max_connections=max(1, cfg.concurrency), max_keepalive_connections=0)
        overall = asyncio.Semaphore(max(1, cfg.concurrency))
        per_host: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(max(1, cfg.per_host)))
        async with httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            trust_env=False,
            follow_redirects=False,
            headers={"User-Agent": cfg.user_agent, "Accept": _ACCEPT},
        ) as client:

            async def one(url: str) -> FetchResult:
                async with overall, per_host[_host_key(url)]:
                    result = await self._fetch_one(client, url)
                if on_result is not None:
                    on_result(result)
                return result

            tasks = [asyncio.create_task(one(url)) for url in urls]
            watcher = asyncio.create_task(_cancel_when_set(cancel, tasks)) if cancel is not None else None
            try:
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                if watcher is not None:
                    watcher.cancel()
        results = []
        for url, outcome in zip(urls, outcomes):
            if isinstance(outcome, FetchResult):
                results.append(outcome)
            elif isinstance(outcome, asyncio.CancelledError):
                results.append(FetchResult(url, url, failure="cancelled", error="cancelled"))
            else:  # a bug, not network trouble; still reported per page rather than raised
                results.append(FetchResult(url, url, failure="network", error=f"{type(outcome).__name__}: {outcome}"))
        return results

    async def _fetch_one(self, client: httpx.AsyncClient, url: str) -> FetchResult:
        start = time.monotonic()
        state = {"final": url}
        try:
            return await asyncio.wait_for(self._follow(client, url, state, start), self.config.total_timeout_s)
        except asyncio.TimeoutError:
            failure, message = "timeout", f"no complete answer within {self.config.total_timeout_s:g} s"
        except _Failed as e:
            failure, message = e.failure, str(e)
        except AddressRefused as e:
            failure, message = "refused", str(e)
        except (httpx.InvalidURL, ValueError) as e:  # urlsplit and IDNA encoding raise ValueError
            failure, message = "invalid_url", f"{state['final']}: not a valid URL ({e})"
        except httpx.TimeoutException as e:
            failure, message = "timeout", f"{type(e).__name__}: the server did not answer in time"
        except (httpx.HTTPError, OSError) as e:
            failure, message = "network", f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return FetchResult(url, state["final"], failure=failure, error=message, seconds=time.monotonic() - start)

    async def _follow(self, client: httpx.AsyncClient, url: str, state: dict, start: float) -> FetchResult:
        current, seen = without_fragment(url), set()
        for _ in range(self.config.max_redirects + 1):
            seen.add(current)
            state["final"] = current
            response = await self._send(client, current)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_CODES and location:
                    target = without_fragment(urljoin(current, location))
                    if target in seen:
                        raise _Failed("redirects", f"redirect loop: {current} -> {target}")
                    current = target
                    continue
                if response.status_code >= 400:
                    raise _Failed("http", f"HTTP {response.status_code} from {current}")
                mime, charset = _parse_content_type(response.headers.get("content-type", ""))
                if mime and mime not in READABLE_TYPES and mime != "application/octet-stream":
                    raise _Failed("content_type", f"{mime} is not read (only HTML, PDF, plain text and Markdown)")
                body = await self._read_capped(response)
            finally:
                await response.aclose()
            if mime not in READABLE_TYPES:
                mime = _sniff(body, current)
            return FetchResult(
                url, current, response.status_code, mime, charset, body, seconds=time.monotonic() - start
            )
        raise _Failed("redirects", f"more than {self.config.max_redirects} redirects from {url}")

    async def _send(self, client: httpx.AsyncClient, url: str) -> httpx.Response:
        """Open `url` on an address we checked ourselves; the Host header and TLS name stay the hostname."""
        parsed = httpx.URL(url)
        check_scheme(url, parsed.scheme)
        host = parsed.raw_host.decode("ascii")
        if not host:
            raise _Failed("invalid_url", f"{url}: no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await asyncio.to_thread(
            checked_addresses,
            host,
            port,
            resolver=self._resolver,
            allow_private=self.config.allow_private_addresses,
            is_public=self._is_public,
        )
        extensions = {}
        if parsed.scheme == "https" and parse_ip(host) is None:
            extensions["sni_hostname"] = host
        host_header = f"[{host}]" if ":" in host else host  # not netloc: that would carry user:password@
        if parsed.port is not None:
            host_header += f":{parsed.port}"
        last_error: Exception | None = None
        for address in addresses:
            request = client.build_request(
                "GET", parsed.copy_with(host=address), headers={"Host": host_header}, extensions=extensions
            )
            try:
                return await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last_error = e
        assert last_error is not None
        raise last_error

    async def _read_capped(self, response: httpx.Response) -> bytes:
        cap = self.config.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _Failed("too_large", f"body of {int(declared):,} bytes is over the {cap:,}-byte limit")
        body = bytearray()
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) > cap:  # stop reading: the rest never reaches memory
                raise _Failed("too_large", f"body is over the {cap:,}-byte limit; stopped reading")
        return bytes(body)


_ACCEPT = "text/html,application/xhtml+xml,application/pdf;q=0.9,text/markdown;q=0.9,text/plain;q=0.8"


def _parse_content_type(value: str) -> tuple[str | None, str | None]:
    if not value.strip():
        return None, None
    mime, *params = [p.strip() for p in value.split(";")]
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip("\"'")
    return mime.lower(), charset


def _sniff(body: bytes, url: str) -> str:
    """Type of a body served without a usable Content-Type (missing, or application/octet-stream)."""
    head = body[:512].lstrip().lower()
    path = urlsplit(url).path.lower()
    if head.startswith(b"%pdf-"):
        return "application/pdf"
    if head.startswith((b"<!doctype html", b"<html")) or path.endswith((".html", ".htm")):
        return "text/html"
    if path.endswith((".md", ".markdown")):
        return "text/markdown"
    if path.endswith(".txt"):
        return "text/plain"
    raise _Failed("content_type", "the server gave no usable content type and the body is not HTML or PDF")


def _host_key(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # a malformed URL; _fetch_one reports it
        return ""


def without_fragment(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(fragment=""))


async def _cancel_when_set(cancel: threading.Event, tasks: list[asyncio.Task]) -> None:
    while not cancel.is_set():
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()


def run_blocking(make_coroutine: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, on a private loop.

    When the calling thread already runs a loop (an async front end calling us directly), the work
    moves to a short-lived thread, since a loop cannot be nested.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()
