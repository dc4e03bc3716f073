"""Talking to the services behind the gateway: one pooled HTTP client per event loop, responses read chunk by chunk.

Two interchangeable clients sit behind one small interface so the choice can be measured rather than assumed
(bench/gateway.py, docs/decisions/0020-gateway-http-client.md). Both keep connections alive, set no limit of
their own on concurrent connections (the gateway's per-service caps are the limit) and never decode or buffer a
body: bytes go out as they come in.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

CHUNK_BYTES = 64 * 1024


class UpstreamError(Exception):
    """The service could not be reached or stopped answering; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[str, str]]

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def send(
        self, *, method: str, url: str, headers: dict[str, str], body: bytes | AsyncIterable[bytes]
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


# --- httpx -------------------------------------------------------------------------------------------------------
@dataclass
class _HttpxResponse:
    response: Any
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = self.response.status_code
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.response.headers.raw]

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamError("timeout", f"the service went silent for too long: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError("broken", f"the service broke off its answer: {exc!r}") from exc

    async def aclose(self) -> None:
        await self.response.aclose()


class HttpxUpstream:
    """httpx.AsyncClient with TCP_NODELAY, no connection limit, long keep-alive."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        import httpx

        transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=1024, keepalive_expiry=60),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=None),
        )

    async def send(
        self, *, method: str, url: str, headers: dict[str, str], body: bytes | AsyncIterable[bytes]
    ) -> UpstreamResponse:
        import httpx

        request = self.client.build_request(method, url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.ConnectError as exc:
            raise UpstreamError("connect", f"cannot connect: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamError("timeout", f"no answer in time: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError("broken", f"the request failed: {exc!r}") from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self.client.aclose()


# --- aiohttp -----------------------------------------------------------------------------------------------------
@dataclass
class _AiohttpResponse:
    response: Any
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = self.response.status
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.response.raw_headers]

    async def chunks(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamError("timeout", "the service went silent for too long") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("broken", f"the service broke off its answer: {exc!r}") from exc

    async def aclose(self) -> None:
        self.response.release()


class AiohttpUpstream:
    """aiohttp.ClientSession (TCP_NODELAY by default), no connection limit, no decompression."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )

    async def send(
        self, *, method: str, url: str, headers: dict[str, str], body: bytes | AsyncIterable[bytes]
    ) -> UpstreamResponse:
        import aiohttp

        try:
            response = await self.session.request(method, url, headers=headers, data=body, allow_redirects=False)
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError("connect", f"cannot connect: {exc!r}") from exc
        except TimeoutError as exc:
            raise UpstreamError("timeout", "no answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("broken", f"the request failed: {exc!r}") from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        await self.session.close()


def upstream_create(*, kind: str, connect_timeout_s: float, read_timeout_s: float) -> Upstream:
    """A new client of `kind` ("httpx" or "aiohttp") bound to the running event loop."""
    if kind == "httpx":
        return HttpxUpstream(connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
    return AiohttpUpstream(connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
