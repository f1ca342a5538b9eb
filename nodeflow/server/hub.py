"""The websocket hub: fans engine events out to browser clients on ``/api/ws``.

Threads. The executor runs workflows on a worker thread and calls :meth:`Hub.publish` there; the
sockets live on the aiohttp event loop. ``publish`` therefore does only cheap, non-blocking work
in the caller's thread (the preview throttle decision and one ``json.dumps``) and hands the rest
to the loop with ``loop.call_soon_threadsafe``. It never awaits or blocks on a client, so a slow
browser can never slow a generation down. Because every hand-off goes through the loop's FIFO
callback queue, state messages published from one thread reach every client in publish order.

Per-client back-pressure. Each client has its own bounded outbox and its own sender task, so one
client stalled on a full TCP window only ever delays itself. When an outbox holds ``max_queue``
items the policy is:

* queued *droppable* messages are dropped first to make room: previews and ``node.progress``
  events, which are stale by then because the next one supersedes them (a burst of progress
  reports must not push a healthy browser off); an incoming droppable message is dropped only
  when the outbox is full of state;
* state messages (run/node/queue changes) are *never* dropped silently: a browser that missed one
  would show a wrong state forever. They may grow the outbox up to a hard cap of
  ``HARD_CAP_FACTOR * max_queue``; a client that reaches it is hopelessly behind and is
  disconnected (its transport is aborted: it is not reading, so a close frame could not reach it
  anyway). The browser sees the socket drop, reconnects and refetches state over HTTP, which is
  the only correct recovery once messages would otherwise be lost. Memory per client is thus
  bounded, and the hub never grows without limit.

Previews. A :class:`~nodeflow.events.NodePreview` carries a PIL image. Previews are throttled per
run to at most one per ``preview_interval`` seconds (extras are dropped: a preview is a picture of
work in progress, and only the latest matters). The throttle decision is taken in ``publish`` so
that dropped previews cost nothing; an accepted one is encoded to ``PREVIEW_FORMAT`` on a small
dedicated thread pool, never in the publisher's thread (the worker must get back to the GPU) nor
on the event loop (a 1024² encode takes milliseconds that every socket would wait for). It is sent
as one binary frame, see :func:`encode_preview_frame`. Since encoding is asynchronous, a preview
may reach clients after later state messages (even after ``node.finished``); clients should treat
a preview as "latest picture for (run_id, node) if step is newer" and ignore it otherwise.

The publisher hands the image over: it must not mutate it after ``publish`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import struct
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from nodeflow.events import NodePreview

log = logging.getLogger(__name__)

#: Wire format of preview images. JPEG, not PNG: previews are noisy, photographic
#: in-progress pictures that are thrown away a tenth of a second later, so lossless is wasted;
#: JPEG encodes several times faster and is typically 5-10x smaller, which matters when the
#: same frame goes to many browsers, some over slow links.
PREVIEW_FORMAT = "jpeg"
PREVIEW_QUALITY = 85

#: A client whose outbox holds this many times ``max_queue`` state messages is disconnected.
HARD_CAP_FACTOR = 10

#: Previews being encoded at once; more are dropped (the pool is behind, newer ones will come).
MAX_PENDING_ENCODES = 4

_HEADER_LEN = struct.Struct(">I")


def encode_preview_frame(header: dict[str, Any], image_bytes: bytes) -> bytes:
    """Build a binary preview frame: ``u32 big-endian header length | JSON header | image``.

    One binary websocket message per preview (rather than JSON plus base64) keeps the image
    bytes unexpanded and lets the browser make a Blob straight from the tail. The header holds
    ``run_id``, ``node``, ``step`` and ``format`` (``"jpeg"`` or ``"png"``).
    """
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return _HEADER_LEN.pack(len(head)) + head + image_bytes


def decode_preview_frame(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a frame made by :func:`encode_preview_frame` into ``(header, image_bytes)``.

    In a browser: ``n = new DataView(buf).getUint32(0)``; the header is
    ``JSON.parse(new TextDecoder().decode(buf.slice(4, 4 + n)))`` and the image
    ``new Blob([buf.slice(4 + n)], {type: "image/" + header.format})``.
    """
    if len(frame) < _HEADER_LEN.size:
        raise ValueError("preview frame too short")
    (n,) = _HEADER_LEN.unpack_from(frame)
    end = _HEADER_LEN.size + n
    if end > len(frame):
        raise ValueError("preview frame header length exceeds frame")
    header = json.loads(frame[_HEADER_LEN.size : end].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("preview frame header is not a JSON object")
    return header, bytes(frame[end:])


def _encode_image(image: Any) -> bytes:
    """Encode a PIL image as ``PREVIEW_FORMAT`` (runs on the encoder pool)."""
    if PREVIEW_FORMAT == "jpeg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=PREVIEW_FORMAT.upper(), quality=PREVIEW_QUALITY)
    return buf.getvalue()


@dataclass(slots=True)
class _Item:
    payload: str | bytes
    droppable: bool
    """Superseded by a later message of its kind (a preview, a progress report)."""


@dataclass
class Outbox:
    """One client's bounded send queue, implementing the drop/disconnect policy above.

    Kept free of sockets so the policy can be tested on its own. ``offer`` returns False when
    the client must be disconnected (a state message hit the hard cap).
    """

    max_queue: int
    hard_cap: int
    items: deque[_Item] = field(default_factory=deque)
    droppables: int = 0
    dropped: int = 0
    high_water: int = 0

    def offer(self, payload: str | bytes, *, droppable: bool) -> bool:
        if len(self.items) >= self.max_queue and self.droppables:
            self._drop_queued_droppables()
        if droppable:
            if len(self.items) >= self.max_queue:
                self.dropped += 1
                return True
            self.droppables += 1
        elif len(self.items) >= self.hard_cap:
            return False
        self.items.append(_Item(payload, droppable))
        self.high_water = max(self.high_water, len(self.items))
        return True

    def pop(self) -> _Item | None:
        if not self.items:
            return None
        item = self.items.popleft()
        if item.droppable:
            self.droppables -= 1
        return item

    def __len__(self) -> int:
        return len(self.items)

    def _drop_queued_droppables(self) -> None:
        kept = deque(item for item in self.items if not item.droppable)
        self.dropped += len(self.items) - len(kept)
        self.items = kept
        self.droppables = 0


@dataclass(eq=False)
class _Client:
    id: str
    ws: web.WebSocketResponse
    request: web.Request
    outbox: Outbox
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    sender: asyncio.Task[None] | None = None
    closed: bool = False


class Hub:
    """Fans engine events and state messages out to websocket clients; see the module doc."""

    def __init__(
        self,
        *,
        max_queue: int = 1000,
        preview_interval: float = 0.1,
        max_message_bytes: int = 64 * 1024,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.max_queue = max_queue
        self.hard_cap = HARD_CAP_FACTOR * max_queue
        self.preview_interval = preview_interval
        self.max_message_bytes = max_message_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[str, _Client] = {}
        self._closed = False
        # Touched from publisher threads: guarded by a lock.
        self._throttle_lock = threading.Lock()
        self._last_preview: dict[str, float] = {}
        # Touched only on the loop.
        self._encoder: ThreadPoolExecutor | None = None
        self._pending_encodes = 0
        self.slow_disconnects = 0
        self.dropped = 0
        self.max_queue_depth = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop; call from ``on_startup`` before any publish."""
        self._loop = loop
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodeflow-preview")

    async def close(self) -> None:
        """Close every client socket (going-away) and stop the encoder; for server shutdown."""
        self._closed = True
        clients = list(self._clients.values())
        await asyncio.gather(*(self._close_client(c) for c in clients), return_exceptions=True)
        if self._encoder is not None:
            self._encoder.shutdown(wait=False, cancel_futures=True)
            self._encoder = None

    @property
    def clients(self) -> int:
        """How many websocket clients are connected."""
        return len(self._clients)

    def stats(self) -> dict[str, int]:
        """Counters for monitoring and tests (read on the loop thread)."""
        return {
            "clients": len(self._clients),
            "slow_disconnects": self.slow_disconnects,
            "dropped": self.dropped + sum(c.outbox.dropped for c in self._clients.values()),
            "max_queue_depth": self.max_queue_depth,
            "pending_encodes": self._pending_encodes,
        }

    # -- publishing (any thread) -------------------------------------------------------------

    def publish(self, event: Any) -> None:
        """Send an engine event to every client; thread-safe and never blocks on a client.

        A :class:`NodePreview` is throttled here and encoded later off both this thread and the
        loop; any other event goes out as its ``to_json()`` dict.
        """
        if isinstance(event, NodePreview):
            if event.image is None or not self._accept_preview(event.run_id):
                return
            self._call_soon(self._start_preview, event)
        else:
            text = json.dumps(event.to_json(), separators=(",", ":"), default=str)
            self._call_soon(self._fan_out, text, event.type == "node.progress")

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send a JSON state message (queue changes etc.) to every client; thread-safe.

        Serialised here, once, so the caller may reuse the dict, and so every client gets the
        same snapshot; ``default=str`` keeps an odd value from raising in the worker thread.
        """
        text = json.dumps(message, separators=(",", ":"), default=str)
        self._call_soon(self._fan_out, text, False)

    def _call_soon(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or self._closed:
            return  # not started or shut down: there is no one to send to
        with contextlib.suppress(RuntimeError):  # loop closed under us during shutdown
            loop.call_soon_threadsafe(callback, *args)

    def _accept_preview(self, run_id: str) -> bool:
        now = time.monotonic()
        with self._throttle_lock:
            last = self._last_preview.get(run_id)
            if last is not None and now - last < self.preview_interval:
                return False
            self._last_preview[run_id] = now
            if len(self._last_preview) > 64:  # entries older than the interval no longer matter
                self._last_preview = {
                    r: t for r, t in self._last_preview.items() if now - t < self.preview_interval
                }
            return True

    # -- on the loop -------------------------------------------------------------------------

    def _start_preview(self, event: NodePreview) -> None:
        if not self._clients or self._encoder is None:
            return
        if self._pending_encodes >= MAX_PENDING_ENCODES:
            self.dropped += 1
            return
        assert self._loop is not None
        header = {
            "run_id": event.run_id,
            "node": event.node,
            "step": event.step,
            "format": PREVIEW_FORMAT,
        }
        self._pending_encodes += 1
        future = self._loop.run_in_executor(self._encoder, _encode_image, event.image)
        future.add_done_callback(lambda f: self._preview_encoded(f, header))

    def _preview_encoded(self, future: asyncio.Future[bytes], header: dict[str, Any]) -> None:
        self._pending_encodes -= 1
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.warning(
                "preview for %s/%s failed to encode: %r", header["run_id"], header["node"], exc
            )
            return
        self._fan_out(encode_preview_frame(header, future.result()), True)

    def _fan_out(self, payload: str | bytes, droppable: bool) -> None:
        for client in list(self._clients.values()):
            self._offer(client, payload, droppable)

    def _offer(self, client: _Client, payload: str | bytes, droppable: bool) -> None:
        if client.closed:
            return
        if not client.outbox.offer(payload, droppable=droppable):
            log.warning("websocket client %s is too far behind; disconnecting it", client.id)
            self.slow_disconnects += 1
            self._abort_client(client)
            return
        self.max_queue_depth = max(self.max_queue_depth, len(client.outbox))
        client.wakeup.set()

    def _abort_client(self, client: _Client) -> None:
        """Drop a client at once: it is not reading, so no graceful close could complete."""
        client.closed = True
        self._unregister(client)
        if client.sender is not None:
            client.sender.cancel()
        transport = client.request.transport
        if transport is not None:
            transport.abort()

    def _unregister(self, client: _Client) -> None:
        if self._clients.get(client.id) is client:
            del self._clients[client.id]
            self.dropped += client.outbox.dropped
            client.outbox.dropped = 0
        client.outbox.items.clear()
        client.outbox.droppables = 0

    async def _close_client(self, client: _Client) -> None:
        client.closed = True
        self._unregister(client)
        if client.sender is not None:
            client.sender.cancel()
        try:
            await asyncio.wait_for(client.ws.close(code=WSCloseCode.GOING_AWAY), timeout=2)
        except (TimeoutError, ConnectionError):
            transport = client.request.transport
            if transport is not None:
                transport.abort()

    async def _send_loop(self, client: _Client) -> None:
        """Drain one client's outbox; only this task writes to its socket."""
        ws = client.ws
        try:
            while not client.closed:
                item = client.outbox.pop()
                if item is None:
                    client.wakeup.clear()
                    await client.wakeup.wait()
                elif isinstance(item.payload, bytes):
                    await ws.send_bytes(item.payload)
                else:
                    await ws.send_str(item.payload)
        except (ConnectionError, RuntimeError) as exc:  # peer went away mid-send
            log.debug("websocket client %s send failed: %r", client.id, exc)
        except Exception:
            # Never leave a client registered with a dead sender: it would stall silently.
            log.exception("websocket client %s sender crashed; disconnecting it", client.id)
            self._abort_client(client)

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        """The ``/api/ws`` route: register the client, say hello, forward its outbox.

        Incoming messages are read only to notice pings and the close; anything bigger than
        ``max_message_bytes`` makes aiohttp close the socket (1009), so a misbehaving client
        cannot make the server buffer unbounded input.
        """
        if self._loop is None:
            self.attach(asyncio.get_running_loop())
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=self.max_message_bytes)
        await ws.prepare(request)
        if self._closed:
            await ws.close(code=WSCloseCode.GOING_AWAY)
            return ws
        client = _Client(
            id=uuid.uuid4().hex,
            ws=ws,
            request=request,
            outbox=Outbox(self.max_queue, self.hard_cap),
        )
        client.outbox.offer(json.dumps({"type": "hello", "client_id": client.id}), droppable=False)
        self._clients[client.id] = client
        client.sender = asyncio.create_task(self._send_loop(client))
        client.wakeup.set()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and _is_ping(msg.data):
                    self._offer(client, '{"type":"pong"}', False)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            client.closed = True
            self._unregister(client)
            client.sender.cancel()
            await asyncio.wait({client.sender})  # unlike await, never raises its cancellation
            if not ws.closed:
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(ws.close(), timeout=2)
        return ws


def _is_ping(data: str) -> bool:
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read: not a ping
        return False
    return isinstance(message, dict) and message.get("type") == "ping"
