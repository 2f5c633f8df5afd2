"""Fetching untrusted URLs for the knowledge base: limits, robots.txt, no private addresses.

Every request (the document's URL, each redirect, robots.txt, every crawled page):

- is ``http`` or ``https``; redirects are followed here, at most :data:`MAX_REDIRECTS`,
  each one checked like the first;
- never reaches a private, loopback, link-local, multicast, reserved or unspecified
  address: an IP literal is checked before connecting, a host name after it resolves
  (the connection goes to the address that was checked, so DNS rebinding cannot swap
  it). ``KNOWLEDGE_ALLOW_HOSTS`` lists ``host[:port]`` entries that may be private
  (tests serve a site on loopback), ``*`` allows every one;
- has a time limit and a size limit (:data:`MAX_BYTES`, Tavus's 50 MB), read in
  pieces so a server that lies about its length is cut off;
- honours robots.txt of its site (a missing one allows everything).

A refused or failed fetch is :class:`FetchError` with Tavus's error code
(``invalid_file_url``, ``file_size_too_large``, ``website_processing_failed``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import aiohttp
from aiohttp.resolver import ThreadedResolver

MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
TIMEOUT_SECS = 30.0
USER_AGENT = "persona-video-agent-knowledge/0.1 (+robots.txt honoured)"
ROBOTS_MAX_BYTES = 512 * 1024


class FetchError(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def _is_public(address: str) -> bool:
    """A globally routable unicast address (and, for IPv6 forms that carry an IPv4 address
    — mapped, 6to4, Teredo, NAT64 — that one too)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if embedded is not None:
                candidates.append(embedded)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return all(c.is_global and not c.is_multicast for c in candidates)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass
class AddressPolicy:
    """Which non-public addresses may be fetched (``KNOWLEDGE_ALLOW_HOSTS``)."""

    allowed: frozenset[str] = frozenset()

    @classmethod
    def from_setting(cls, value: str | None) -> AddressPolicy:
        entries = {e.strip().lower() for e in (value or "").split(",") if e.strip()}
        return cls(frozenset(entries))

    def permits(self, host: str, port: int, address: str) -> bool:
        if _is_public(address):
            return True
        host = host.lower().strip("[]")
        return bool({"*", host, f"{host}:{port}", address, f"{address}:{port}"} & self.allowed)


class _GuardedResolver(ThreadedResolver):
    """Resolves, then refuses any address the policy does not permit."""

    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self.policy = policy

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        results = await super().resolve(host, port, family)
        for result in results:
            if not self.policy.permits(host, port, result["host"]):
                raise FetchError("invalid_file_url", f"{host} resolves to a non-public address "
                                 f"({result['host']}: private, loopback, link-local or "
                                 "reserved); it is not fetched")
        return results


def check_url(url: str, policy: AddressPolicy) -> str:
    """A URL we may request (scheme, host, an IP literal's address), normalised."""
    url = urldefrag(url.strip())[0]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("invalid_file_url", f"{url[:200]!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise FetchError("invalid_file_url", "URLs with credentials are not fetched")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError("invalid_file_url", f"{url[:200]!r} has an invalid port") from None
    try:
        ipaddress.ip_address(parts.hostname.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if literal and not policy.permits(parts.hostname, port, parts.hostname):
        raise FetchError("invalid_file_url", f"{parts.hostname} is not a public address "
                         "(private, loopback, link-local or reserved); it is not fetched")
    return url


@dataclass
class Response:
    url: str  # after redirects
    status: int
    content_type: str | None
    body: bytes


@dataclass
class Fetcher:
    """An HTTP client for untrusted URLs (use as ``async with``)."""

    policy: AddressPolicy = field(default_factory=AddressPolicy)
    max_bytes: int = MAX_BYTES
    timeout_secs: float = TIMEOUT_SECS
    _http: aiohttp.ClientSession | None = None
    _robots: dict[str, RobotFileParser | None] = field(default_factory=dict)

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(resolver=_GuardedResolver(self.policy), limit=4,
                                         use_dns_cache=False)
        self._http = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=self.timeout_secs, sock_connect=10))
        return self

    async def __aexit__(self, *exc) -> None:
        if self._http is not None:
            await self._http.close()

    async def get(self, url: str, *, limit: int | None = None,
                  progress: Callable[[int, int | None], None] | None = None,
                  follow: Callable[[str], Awaitable[bool]] | None = None) -> Response:
        """GET ``url`` within the limits, following checked redirects (each one only if
        ``follow(next_url)`` says so: a crawl stays on its site and inside robots.txt)."""
        limit = limit or self.max_bytes
        url = check_url(url, self.policy)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with self._http.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchError("invalid_file_url", f"{url}: a redirect with no Location")
                        url = check_url(urljoin(url, location), self.policy)
                        if follow is not None and not await follow(url):
                            raise FetchError("invalid_file_url", f"redirected to {url[:200]}, "
                                             "which is not crawled (another site or robots.txt)")
                        continue
                    length = response.content_length
                    if length is not None and length > limit:
                        raise FetchError("file_size_too_large", f"{url} is {length} bytes "
                                         f"(the limit is {limit // (1024 * 1024)} MB)")
                    body = bytearray()
                    async for piece in response.content.iter_chunked(64 * 1024):
                        body += piece
                        if len(body) > limit:
                            raise FetchError("file_size_too_large", f"{url} is larger than "
                                             f"{limit // (1024 * 1024)} MB")
                        if progress is not None:
                            progress(len(body), length)
                    return Response(str(response.url), response.status,
                                    response.headers.get("Content-Type"), bytes(body))
            except FetchError:
                raise
            except TimeoutError:
                raise FetchError("invalid_file_url", f"{url}: no answer within "
                                 f"{self.timeout_secs:g}s") from None
            except aiohttp.ClientError as exc:
                cause = exc
                while cause.__cause__ is not None or cause.__context__ is not None:
                    inner = cause.__cause__ or cause.__context__
                    if isinstance(inner, FetchError):
                        raise inner from None
                    cause = inner
                raise FetchError("invalid_file_url", f"{url}: {type(exc).__name__}: "
                                 f"{str(exc)[:200]}") from None
        raise FetchError("invalid_file_url", f"{url}: more than {MAX_REDIRECTS} redirects")

    async def allowed(self, url: str) -> bool:
        """Whether the site's robots.txt lets us fetch ``url`` (no robots.txt: yes)."""
        parts = urlsplit(url)
        site = f"{parts.scheme}://{parts.netloc}"
        if site not in self._robots:
            parser: RobotFileParser | None = None
            try:
                response = await self.get(f"{site}/robots.txt", limit=ROBOTS_MAX_BYTES)
                if response.status == 200:
                    parser = RobotFileParser()
                    parser.parse(response.body.decode("utf-8", "replace").splitlines())
                elif response.status in (401, 403):
                    parser = RobotFileParser()
                    parser.disallow_all = True
            except FetchError as exc:
                if exc.code == "file_size_too_large":
                    parser = None
                else:
                    raise
            self._robots[site] = parser
        parser = self._robots[site]
        return parser is None or parser.can_fetch(USER_AGENT, url)


def same_site(a: str, b: str) -> bool:
    """Same scheme-agnostic host (``www.`` ignored)."""
    def host(url: str) -> str:
        name = (urlsplit(url).hostname or "").lower()
        return name.removeprefix("www.")

    return host(a) == host(b) and urlsplit(a).port == urlsplit(b).port


def links(html: str, base: str) -> list[str]:
    """The page's http(s) links, absolute, without fragments, in order, once each."""
    import lxml.html

    try:
        tree = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001
        return []
    seen: dict[str, None] = {}
    for element in tree.xpath("//a[@href]"):
        href = element.get("href", "").strip()
        if not href or href.startswith(("mailto:", "javascript:", "tel:", "#")):
            continue
        url = urldefrag(urljoin(base, href))[0]
        if urlsplit(url).scheme in ("http", "https"):
            seen.setdefault(url, None)
    return list(seen)


@dataclass
class Page:
    url: str
    content_type: str | None
    body: bytes


#: A crawled HTML page larger than this is skipped; all pages of one crawl together at most
#: :data:`CRAWL_MAX_BYTES` (Tavus's 50 MB is per document).
PAGE_MAX_BYTES = 5 * 1024 * 1024
CRAWL_MAX_BYTES = MAX_BYTES


async def crawl(fetcher: Fetcher, start: str, *, depth: int, max_pages: int,
                on_page: Callable[[Page, int], Awaitable[None] | None] | None = None,
                budget_secs: float = 600.0) -> list[Page]:
    """Pages from ``start`` out to ``depth`` link levels on the same site, breadth first, at
    most ``max_pages``, each allowed by robots.txt (after its redirects too). Each page is
    given to ``on_page(page, count)`` and its body dropped then: the returned pages carry
    their URLs only, so a crawl never holds more than one page in memory."""
    from knowledge.parsers import sniff

    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_secs
    queue: list[tuple[str, int]] = [(check_url(start, fetcher.policy), 0)]
    seen = {queue[0][0]}
    pages: list[Page] = []
    total = 0
    while queue and len(pages) < max_pages and loop.time() < deadline and total < CRAWL_MAX_BYTES:
        url, level = queue.pop(0)
        if not await fetcher.allowed(url):
            if level == 0:
                raise FetchError("website_processing_failed",
                                 f"{url}: the site's robots.txt does not allow fetching it")
            continue
        async def on_site(next_url: str) -> bool:
            return same_site(next_url, start) and await fetcher.allowed(next_url)

        try:
            response = await fetcher.get(url, limit=MAX_BYTES if level == 0 else PAGE_MAX_BYTES,
                                         follow=on_site if level > 0 else None)
        except FetchError:
            if level == 0:
                raise
            continue  # a broken or oversized link deeper in the site: skipped
        if response.status >= 400:
            if level == 0:
                raise FetchError("invalid_file_url", f"{url} answered HTTP {response.status}")
            continue
        total += len(response.body)
        page = Page(response.url, response.content_type, response.body)
        pages.append(page)
        found = (links(response.body.decode("utf-8", "replace"), response.url)
                 if level < depth and sniff(response.body) == "html" else [])
        if on_page is not None:
            result = on_page(page, len(pages))
            if asyncio.iscoroutine(result):
                await result
        page.body = b""
        for link in found:
            if link not in seen and same_site(link, start):
                seen.add(link)
                queue.append((link, level + 1))
    return pages
