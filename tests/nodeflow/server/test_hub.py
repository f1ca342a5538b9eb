"""The websocket hub, against a real aiohttp server and real clients on 127.0.0.1.

Every test runs its own event loop with ``asyncio.run`` and a server on an ephemeral port; every
receive has a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from PIL import Image

from nodeflow.events import NodePreview, NodeProgress, NodeStarted, RunFinished, RunStarted
from nodeflow.server.hub import (
    HARD_CAP_FACTOR,
    PREVIEW_FORMAT,
    Hub,
    Outbox,
    decode_preview_frame,
    encode_preview_frame,
)

TIMEOUT = 10.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def serve(hub: Hub) -> AsyncIterator[str]:
    """A real server with the hub on /api/ws; yields the ws URL."""
    app = web.Application()
    app.router.add_get("/api/ws", hub.handler)

    async def startup(_: web.Application) -> None:
        hub.attach(asyncio.get_running_loop())

    app.on_startup.append(startup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/api/ws"
    finally:
        await hub.close()
        await runner.cleanup()


async def connect(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """Connect and consume the hello, after which the client is registered."""
    ws = await session.ws_connect(url)
    hello = await recv_json(ws)
    assert hello["type"] == "hello"
    assert isinstance(hello["client_id"], str) and hello["client_id"]
    return ws


async def recv_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def image(color: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (64, 48), color)


def test_frame_round_trip() -> None:
    header = {"run_id": "r1", "node": "ksampler", "step": 7, "format": "jpeg"}
    frame = encode_preview_frame(header, b"\xff\xd8 image \x00 bytes")
    assert int.from_bytes(frame[:4], "big") == len(json.dumps(header, separators=(",", ":")))
    assert decode_preview_frame(frame) == (header, b"\xff\xd8 image \x00 bytes")
    assert decode_preview_frame(encode_preview_frame({"é": "ü"}, b"")) == ({"é": "ü"}, b"")
    for bad in (b"", b"\x00\x00", b"\x00\x00\x00\x09{}", b"\x00\x00\x00\x02[]"):
        with pytest.raises(ValueError):
            decode_preview_frame(bad)


def test_outbox_drops_previews_first_and_never_drops_state() -> None:
    box = Outbox(max_queue=4, hard_cap=8)
    assert box.offer("s0", droppable=False)
    assert box.offer(b"p0", droppable=True)
    assert box.offer("s1", droppable=False)
    assert box.offer(b"p1", droppable=True)
    # Full: the queued (stale) previews are evicted, and the newest one takes their place.
    assert box.offer(b"p2", droppable=True)
    assert [i.payload for i in box.items] == ["s0", "s1", b"p2"]
    assert box.dropped == 2
    assert box.offer("s2", droppable=False)
    # Full again: a state message evicts the preview rather than being refused.
    assert box.offer("s3", droppable=False)
    assert [i.payload for i in box.items] == ["s0", "s1", "s2", "s3"]
    assert box.dropped == 3
    # State messages keep coming past max_queue, up to the hard cap, and are all kept in order.
    for n in range(4, 8):
        assert box.offer(f"s{n}", droppable=False)
    assert box.offer(b"p3", droppable=True)  # no room and nothing to evict: dropped
    assert box.dropped == 4
    assert [i.payload for i in box.items] == [f"s{n}" for n in range(8)]
    # At the hard cap a state message cannot be queued: the caller must disconnect.
    assert not box.offer("s8", droppable=False)
    assert len(box) == 8 == box.high_water
    assert [box.pop().payload for _ in range(8)] == [f"s{n}" for n in range(8)]  # type: ignore[union-attr]
    assert box.pop() is None


def test_client_gets_hello_then_events_in_order_and_pong() -> None:
    n = 300

    def events() -> list[Any]:
        out: list[Any] = [RunStarted(run_id="r0", nodes=["a", "b"])]
        for i in range(1, n - 1):
            out.append(NodeProgress(run_id=f"r{i}", node="a", value=i, max=n))
        out.append(RunFinished(run_id=f"r{n - 1}", seconds=1.5))
        return out

    async def main() -> None:
        hub = Hub()
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            ws = await connect(session, url)
            assert hub.clients == 1
            await ws.send_str(json.dumps({"type": "ping"}))
            assert await recv_json(ws) == {"type": "pong"}
            await ws.send_str("not json, ignored")
            worker = threading.Thread(target=lambda: [hub.publish(e) for e in events()])
            worker.start()
            got = [await recv_json(ws) for _ in range(n)]
            worker.join()
            assert [m["run_id"] for m in got] == [f"r{i}" for i in range(n)]
            assert [m["type"] for m in got] == (
                ["run.started"] + ["node.progress"] * (n - 2) + ["run.finished"]
            )
            assert got[0]["nodes"] == ["a", "b"]
            assert got[5]["value"] == 5
            await ws.close()
            await wait_until(lambda: hub.clients == 0)

    run(main())


def test_preview_frames_decode_to_header_and_image() -> None:
    async def main() -> None:
        hub = Hub()
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            ws = await connect(session, url)
            hub.publish(NodeStarted(run_id="r", node="sampler", node_type="KSampler"))
            hub.publish(NodePreview(run_id="r", node="sampler", step=3, image=image()))
            assert (await recv_json(ws))["type"] == "node.started"
            msg = await ws.receive(timeout=TIMEOUT)
            assert msg.type is WSMsgType.BINARY
            header, data = decode_preview_frame(msg.data)
            assert header == {"run_id": "r", "node": "sampler", "step": 3, "format": "jpeg"}
            assert PREVIEW_FORMAT == "jpeg"
            with Image.open(io.BytesIO(data)) as img:
                assert img.format == "JPEG"
                assert img.size == (64, 48)
                r, g, b = img.convert("RGB").getpixel((10, 10))  # type: ignore[misc]
                assert abs(r - 200) < 10 and abs(g - 30) < 10 and abs(b - 30) < 10
            # An RGBA image is flattened for JPEG rather than failing.
            rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 128))
            hub.publish(NodePreview(run_id="other", node="n", step=1, image=rgba))
            msg = await ws.receive(timeout=TIMEOUT)
            header, data = decode_preview_frame(msg.data)
            assert header["run_id"] == "other"
            with Image.open(io.BytesIO(data)) as img:
                assert img.format == "JPEG"

    run(main())


def test_previews_are_throttled_per_run() -> None:
    async def main() -> None:
        hub = Hub(preview_interval=0.1)
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            ws = await connect(session, url)

            def publish_for(seconds: float, runs: list[str]) -> None:
                img = image()
                start = time.monotonic()
                for i in range(100):
                    for run_id in runs:
                        hub.publish(NodePreview(run_id=run_id, node="s", step=i, image=img))
                    time.sleep(max(0.0, start + seconds * (i + 1) / 100 - time.monotonic()))

            async def frames_for(runs: list[str]) -> dict[str, list[int]]:
                await asyncio.to_thread(publish_for, 0.5, runs)
                await wait_until(lambda: hub.stats()["pending_encodes"] == 0)
                hub.broadcast({"type": "done"})  # queued after every encoded frame
                got: dict[str, list[int]] = {r: [] for r in runs}
                while True:
                    msg = await ws.receive(timeout=TIMEOUT)
                    if msg.type is WSMsgType.TEXT:
                        assert json.loads(msg.data) == {"type": "done"}
                        return got
                    header, _ = decode_preview_frame(msg.data)
                    got[header["run_id"]].append(header["step"])

            one = await frames_for(["a"])
            assert 3 <= len(one["a"]) <= 7, one
            assert one["a"][0] == 0 and one["a"] == sorted(one["a"])

            two = await frames_for(["b", "c"])  # each run has its own budget
            for steps in two.values():
                assert 3 <= len(steps) <= 7, two
                assert steps[0] == 0

    run(main())


async def raw_ws_client(url: str) -> socket.socket:
    """A client that does the websocket handshake by hand and then never reads.

    A tiny receive buffer makes the server's TCP window fill almost at once, as it would for a
    browser tab on a dead network.
    """
    port = int(url.split(":")[2].split("/")[0])
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = (
        "GET /api/ws HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), TIMEOUT)
        assert chunk, "server closed during handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def test_slow_client_does_not_delay_fast_client_and_is_disconnected_at_cap() -> None:
    n = 5000
    pad = "x" * 2000  # ~10 MB in all: far more than the slow client's socket buffers hold

    async def main() -> None:
        hub = Hub(max_queue=50)
        assert hub.hard_cap == 50 * HARD_CAP_FACTOR
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            slow = await raw_ws_client(url)
            fast = await connect(session, url)
            await wait_until(lambda: hub.clients == 2)
            durations: list[float] = []

            def worker() -> None:
                # ~10,000 events/s: far above a real engine's rate, but paced like one, so a
                # healthy client's backlog stays well under the hard cap (an unpaced burst
                # of 5,000 queues ~5,000 deep before the loop gets to send any of it).
                for i in range(n):
                    t0 = time.perf_counter()
                    # node.started: a state message, never dropped (progress may be)
                    hub.publish(NodeStarted(run_id="r", node=pad, node_type=str(i)))
                    durations.append(time.perf_counter() - t0)
                    if i % 25 == 24:
                        time.sleep(0.002)

            thread = threading.Thread(target=worker)
            thread.start()
            values = []
            for _ in range(n):
                msg = await recv_json(fast)
                values.append(int(msg["node_type"]))
            await asyncio.to_thread(thread.join, TIMEOUT)

            assert values == list(range(n))
            # No timing asserts (they belong in benchmarks): that every publish returned while
            # the slow client never read a byte is the evidence that publishing never waits on it.
            assert len(durations) == n
            stats = hub.stats()
            assert stats["slow_disconnects"] == 1, stats
            assert stats["max_queue_depth"] <= hub.hard_cap, stats
            assert hub.clients == 1  # only the fast client is left
            # The slow client's connection really was dropped.
            loop = asyncio.get_running_loop()
            slow.setblocking(False)
            received = 0
            try:
                while chunk := await asyncio.wait_for(loop.sock_recv(slow, 65536), TIMEOUT):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < n * len(pad)
            slow.close()
            # And the fast one still works.
            hub.broadcast({"type": "after"})
            assert (await recv_json(fast))["type"] == "after"

    run(main())


def test_a_burst_of_progress_reports_disconnects_nobody() -> None:
    """Progress is superseded by the next report, so a burst is thinned, never fatal."""
    n = 20_000

    async def main() -> None:
        hub = Hub(max_queue=50)
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            client = await connect(session, url)
            await wait_until(lambda: hub.clients == 1)
            worker = threading.Thread(
                target=lambda: [
                    hub.publish(NodeProgress(run_id="r", node="s", value=i, max=n))
                    for i in range(n)
                ]
            )
            worker.start()
            await asyncio.to_thread(worker.join, TIMEOUT)
            hub.publish(RunFinished(run_id="r"))
            values = []
            while (msg := await recv_json(client))["type"] == "node.progress":
                values.append(msg["value"])
            assert msg["type"] == "run.finished"
            assert hub.stats()["slow_disconnects"] == 0
            assert (
                values == sorted(values) and values[-1] == n - 1
            )  # thinned, in order, latest kept

    run(main())


def test_fifty_clients_receive_all_events() -> None:
    clients, n = 50, 200

    async def main() -> None:
        hub = Hub()
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            sockets = await asyncio.gather(*(connect(session, url) for _ in range(clients)))
            assert hub.clients == clients

            async def collect(ws: aiohttp.ClientWebSocketResponse) -> list[int]:
                return [int((await recv_json(ws))["value"]) for _ in range(n)]

            receivers = [asyncio.create_task(collect(ws)) for ws in sockets]
            publisher = threading.Thread(
                target=lambda: [
                    hub.publish(NodeProgress(run_id="r", node="s", value=i, max=n))
                    for i in range(n)
                ]
            )
            publisher.start()
            results = await asyncio.gather(*receivers)
            publisher.join()
            assert all(r == list(range(n)) for r in results)
            for ws in sockets:
                await ws.close()
            await wait_until(lambda: hub.clients == 0)

    run(main())


def test_oversized_client_message_closes_only_that_client() -> None:
    async def main() -> None:
        hub = Hub(max_message_bytes=1024)
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            bad = await connect(session, url)
            good = await connect(session, url)
            await bad.send_str(json.dumps({"type": "ping"}))
            assert await recv_json(bad) == {"type": "pong"}
            await bad.send_str("x" * 1025)
            msg = await bad.receive(timeout=TIMEOUT)
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
            await wait_until(lambda: hub.clients == 1)
            hub.broadcast({"type": "queue.changed", "pending": 2})
            assert await recv_json(good) == {"type": "queue.changed", "pending": 2}

    run(main())


def test_close_disconnects_clients_and_later_publishes_are_noops() -> None:
    async def main() -> None:
        hub = Hub()
        hub.publish(RunStarted(run_id="early"))  # before attach: nowhere to go, no error
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            ws = await connect(session, url)
            await hub.close()
            msg = await ws.receive(timeout=TIMEOUT)
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
            assert hub.clients == 0
            hub.publish(RunStarted(run_id="late"))
            hub.broadcast({"type": "late"})
            hub.publish(NodePreview(run_id="late", node="n", image=image()))
            # A connection after close is turned away.
            ws2 = await session.ws_connect(url)
            msg = await ws2.receive(timeout=TIMEOUT)
            assert msg.type is WSMsgType.CLOSE

    run(main())
