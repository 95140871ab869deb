"""The Blooio client's sockets check the leadership term before every write.

Regression (issue 20, the two-replica storm, partition seed 1): a leader resumed after
SIGSTOP sent ``POST /webhooks`` 50 ms after SIGCONT, because its fence check ran before
the pause and httpx only wrote the request after it (connection acquisition spans loop
iterations, and a step runnable at the pause runs before the expired deadline timer).
Here the term ends after ``BlooioClient``'s check and before httpx writes: nothing may
reach the server.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from blooio_operator import fence as fencing
from blooio_operator.blooio.fenced import FencedBackend, fenced_transport
from blooio_operator.blooio.pool import DEFAULT_LIMITS, ClientPool
from blooio_operator.fence import Fence, TermOver


class Server:
    """A TCP server that records every byte it receives and answers 200."""

    def __init__(self) -> None:
        self.received = b""
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        self.received += data
        if data:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pool_fences_its_sockets_by_default() -> None:
    pool = ClientPool("http://127.0.0.1:1/v4")
    transport = pool._http._transport  # the client's default transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert isinstance(transport._pool._network_backend, FencedBackend)


def test_a_request_whose_term_ends_before_the_write_sends_nothing() -> None:
    clock = Clock()
    ended: list[str] = []
    fence = Fence(3.0, on_expired=ended.append, clock=clock)
    fence.extend(clock.now)  # a term until 103
    server = Server()

    class TermEndsOnConnect(httpx.AsyncHTTPTransport):
        """The pause: the term runs out while httpx opens the connection."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            clock.now += 10.0
            return await super().handle_async_request(request)

    async def scenario() -> None:
        async with server as url:
            token = fencing.CURRENT.set(fence)
            try:
                async with httpx.AsyncClient(transport=fenced_transport(DEFAULT_LIMITS)) as http:
                    assert (await http.get(url)).status_code == 200  # in the term: sent
                    sent = len(server.received)
                    assert sent > 0
                    late = TermEndsOnConnect(limits=DEFAULT_LIMITS)
                    late._pool._network_backend = FencedBackend(late._pool._network_backend)
                    async with httpx.AsyncClient(transport=late) as http_late:
                        fence.check("the client's own check, before the pause")
                        with pytest.raises(TermOver):
                            await http_late.post(url + "/v4/webhooks", json={"url": "x"})
                    await asyncio.sleep(0.1)
                    assert len(server.received) == sent, server.received[sent:]
            finally:
                fencing.CURRENT.reset(token)

    asyncio.run(scenario())
    assert ended == ["a Blooio request at the socket"]


def test_without_a_fence_nothing_is_checked() -> None:
    server = Server()

    async def scenario() -> None:
        transport = fenced_transport(DEFAULT_LIMITS)
        async with server as url, httpx.AsyncClient(transport=transport) as http:
            assert (await http.get(url)).status_code == 200

    asyncio.run(scenario())
    assert server.received.startswith(b"GET / HTTP/1.1")
