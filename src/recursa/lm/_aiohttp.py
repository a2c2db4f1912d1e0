"""An httpx transport that sends requests through aiohttp's connection pool.

The HTTP backends speak httpx (its client, its errors, :class:`httpx.MockTransport` in tests),
but httpcore's pool costs 4-14 ms of CPU per request once dozens are in flight on one client
(it rescans every waiting request and connection on each change), which put a batch of
sub-calls 5-10% behind its latency limit on a small machine. aiohttp's pool costs well under
a millisecond per request. This module is httpx's one-method transport over it: a request
goes out through aiohttp, the answer comes back as an :class:`httpx.Response` whose body is
streamed (so the caller's size cap still applies), and every aiohttp failure is raised as the
httpx error that means the same thing, so retries and messages work as before.

Proxies come from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), as with
httpx; https verifies with httpx's own default context (certifi, or ``SSL_CERT_FILE`` /
``SSL_CERT_DIR``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import urllib.request
import weakref
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

# First match wins: the more specific aiohttp errors come first.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (OSError, httpx.ReadError),
    (aiohttp.ClientError, httpx.TransportError),
)


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    """Raise aiohttp's (and the socket's) failures as the matching httpx errors."""
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                message = str(exc) or type(exc).__name__
                raise target(message, request=request) from exc
        raise


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives; closing it hands the connection back to the pool
    (or drops it when the body was not read to the end)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection can serve another
        else:
            self._response.close()  # a body dropped half-read leaves the connection unusable


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over one aiohttp ``ClientSession``, opened at the first
    request (inside the event loop that sends it) and closed by :meth:`aclose`.

    Args:
        verify: ``False`` (no verification), ``True`` (httpx's default context, built when the
            first request goes out) or an :class:`ssl.SSLContext` (for a plain-http endpoint,
            one that trusts nothing and so reads no certificate bundle).
        max_connections: connections open at once across all hosts.
        keepalive_s: how long an idle connection is kept for the next request.
        trust_env: take proxies (and ``SSL_CERT_FILE``/``SSL_CERT_DIR``) from the environment.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 64,
        keepalive_s: float = 5.0,
        trust_env: bool = True,
    ) -> None:
        self._verify = verify
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._trust_env = trust_env
        self._loop: asyncio.AbstractEventLoop | None = None  # the session's
        # The open session (none or one), in a list the finalizer can hold without holding
        # the transport: a backend nobody closed (a model passed to an RLM is the caller's to
        # close) must not print aiohttp's "Unclosed client session".
        self._held: list[aiohttp.ClientSession] = []
        weakref.finalize(self, _let_go, self._held)
        self._proxies: dict[tuple[str, str], tuple[str | None, dict[str, str]]] = {}

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._held and self._loop is not loop:
            # Opened in another event loop (an earlier asyncio.run, now closed): its
            # connections belong to that loop and cannot be used or closed from this one.
            _let_go(self._held)
        if not self._held or self._held[0].closed:
            self._loop = loop
            verify = self._verify
            if verify is True:  # httpx's default context: certifi, or SSL_CERT_FILE/SSL_CERT_DIR
                verify = httpx.create_ssl_context(trust_env=self._trust_env)
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive_s, ssl=verify
            )
            session = aiohttp.ClientSession(
                connector=connector,
                # The environment's proxy is looked up once per host (_proxy), not by aiohttp:
                # it would ask a thread for the proxy and for ~/.netrc on every request.
                trust_env=False,
                auto_decompress=False,  # httpx decodes the body by its content-encoding
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
            self._held[:] = [session]
        return self._held[0]

    def _proxy(self, url: httpx.URL) -> tuple[str | None, dict[str, str]]:
        """The proxy the environment names for ``url``'s scheme and host (``None``: direct),
        and the headers that carry the credentials in its URL."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            found: tuple[str | None, dict[str, str]] = (None, {})
            if self._trust_env:
                proxies = urllib.request.getproxies_environment()
                proxy = proxies.get(url.scheme) or proxies.get("all")
                if proxy and not urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                    url.host, proxies
                ):
                    parsed = httpx.URL(proxy if "://" in proxy else f"http://{proxy}")
                    headers = {}
                    if parsed.username:
                        pair = f"{parsed.username}:{parsed.password or ''}".encode()
                        headers["Proxy-Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
                    found = (str(parsed.copy_with(username=None, password=None)), headers)
            self._proxies[key] = found
        return self._proxies[key]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        proxy, proxy_headers = self._proxy(request.url)
        timeout = request.extensions.get("timeout", {})
        try:
            data: bytes | httpx.AsyncByteStream | None = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # type: ignore[assignment]  # an async iterable of bytes
        headers = list(request.headers.multi_items())
        if proxy_headers and request.url.scheme == "http":
            headers += proxy_headers.items()  # a plain request goes to the proxy as it is
            proxy_headers = {}
        with _as_httpx(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=data,
                proxy=proxy,
                proxy_headers=proxy_headers or None,  # https: for the CONNECT
                allow_redirects=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        while self._held:
            await self._held.pop().close()


def _let_go(held: list[aiohttp.ClientSession]) -> None:
    """Drop sessions without closing them through their event loop (gone, or not this
    thread's): each is detached, and its connector marked closed when its loop is closed, so
    neither warns when collected. Their sockets close when collected, or with the process."""
    while held:
        session = held.pop()
        connector = session.connector
        session.detach()
        loop = getattr(connector, "_loop", None)
        if connector is not None and loop is not None and loop.is_closed():
            with contextlib.suppress(Exception):
                connector._close()  # with its loop closed: only marks it
