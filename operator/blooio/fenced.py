"""The leadership term, checked where the bytes of a Blooio request are written.

``BlooioClient`` checks the term (``fence``) before it hands a request to httpx. Between
that check and the first byte on the wire, httpx may wait for a pooled connection or open
a new one: awaits that span loop iterations. A process stopped (SIGSTOP, a frozen node)
in that window resumes with the step already runnable, and asyncio runs it before the
expired deadline timer: the request would leave after the term (the two-replica storm saw
one ``POST /webhooks`` 50 ms after SIGCONT). So the term is checked once more in the
network stream itself, right before each write: httpcore calls ``write`` in the task that
sent the request, where the operator's fence is ambient (``fence.current()``).

httpx builds its httpcore pool without a way to pass a network backend, so
``fenced_transport`` wraps the backend of the pool it made (``_pool._network_backend``);
a unit test pins that structure, so an upgrade that moves it fails a test instead of
silently unfencing the client.
"""

from __future__ import annotations

import typing

import httpcore
import httpx

from blooio_operator import fence as fencing

__all__ = ["FencedBackend", "fenced_transport"]


class _FencedStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        fence = fencing.current()
        if fence is not None:
            fence.check("a Blooio request at the socket")
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        return _FencedStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class FencedBackend(httpcore.AsyncNetworkBackend):
    """Streams whose every write checks the running operator's term first."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _FencedStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _FencedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def fenced_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's default transport, its connections' writes behind the term."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    pool = transport._pool  # no public way to pass a network backend
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx/httpcore changed: cannot fence the Blooio client's sockets")
    pool._network_backend = FencedBackend(pool._network_backend)
    return transport
